/// Applies a retention policy to groups: removes the manifests of restore points no rule keeps.
///
/// Prune only removes restore points; the chunks they alone needed stay until `cairn gc`.
/// Each group is pruned under its group lock (so it never races a backup of the same group) and
/// the repository lock shared (so it never races gc).
public final class Pruner {
    public let repository: Repository
    public let policy: RetentionPolicy
    public var groups: [String]?
    public var dryRun = false
    public var lockWait: Double?

    public struct GroupResult: Sendable, Codable {
        public var group: String
        public var decisions: [RetentionPolicy.Decision]
        public var removed: Int
        public var kept: Int
    }

    public init(repository: Repository, policy: RetentionPolicy) {
        self.repository = repository
        self.policy = policy
    }

    public func run() throws(CairnError) -> [GroupResult] {
        guard !policy.isEmpty else {
            throw CairnError(
                .usage, "name at least one --keep-* rule: prune without one would remove every restore point")
        }
        let catalog = repository.catalog
        let repoLock = try repository.lock(.shared, purpose: "cairn prune", wait: lockWait)
        defer { _ = repoLock }
        let names: [String]
        if let groups {
            for g in groups {
                try GroupName.validate(g)
                guard try catalog.hasGroup(g) else {
                    throw CairnError(.notFound, "group \(g) has no restore points")
                }
            }
            names = groups
        } else {
            names = try catalog.groups()
        }
        var results: [GroupResult] = []
        for group in names {
            let lock = try repository.lock(.group(group), purpose: "cairn prune", wait: lockWait)
            defer { _ = lock }
            let points = try catalog.points(in: group)
            let protected = Set(points.filter { catalog.isProtected($0) })
            let decisions = policy.apply(to: points, protected: protected)
            var removed = 0
            if !dryRun {
                for d in decisions where !d.keep {
                    try catalog.remove(d.id)
                    removed += 1
                }
            } else {
                removed = decisions.filter { !$0.keep }.count
            }
            results.append(
                GroupResult(group: group, decisions: decisions, removed: removed, kept: decisions.count - removed))
        }
        return results
    }
}
