/// `cairn repair`: writes again what a repository keeps twice, from the intact copy.
///
/// Today that is the config and `config.copy`; a config from before copies existed gets its
/// checksum and copy. Derived data has its own command (`cairn rebuild-index`).
extension Repository {
    public struct RepairReport: Sendable, Codable, Equatable {
        /// What was written, one line each; empty when nothing needed repair.
        public var repaired: [String] = []
    }

    /// Needs the repository alone (the exclusive lock), as gc does: no reader then holds a config
    /// half written.
    public func repair(lockWait: Double?) throws(CairnError) -> RepairReport {
        let lock = try lock(.exclusive, purpose: "cairn repair", wait: lockWait)
        defer { _ = lock }
        var report = RepairReport()
        let health = configHealth
        guard !health.isHealthy else { return report }
        var sealed = config
        sealed.checksum = nil
        // Written anyway: the config gets the features list an upgrade would have given it.
        sealed.features = FormatFeature.adding(config.features)
        try sealed.write(to: storage)
        if health.primaryDamage != nil {
            report.repaired.append("config written again from \(RepositoryConfig.copyName)")
        } else if health.unsealed {
            report.repaired.append("config given a checksum and a copy (\(RepositoryConfig.copyName))")
        } else {
            report.repaired.append("\(RepositoryConfig.copyName) written again from config")
        }
        return report
    }
}
