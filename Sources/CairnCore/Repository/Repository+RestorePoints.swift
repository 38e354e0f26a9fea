/// Operations that change the catalog or the index, each under the lock it needs.
///
/// `Catalog` and `ChunkStore` do the work but are not public for it: a caller outside this
/// module cannot change a restore point without its group's lock, or rebuild the index beside
/// a running backup.
extension Repository {
    /// Protects a restore point: prune never removes it and forget refuses it.
    public func protect(_ id: RestorePointID, wait: Double?) throws(CairnError) {
        try withPoint(id, purpose: "cairn protect", wait: wait) { () throws(CairnError) in try catalog.protect(id) }
    }

    /// Removes a restore point's protection.
    public func unprotect(_ id: RestorePointID, wait: Double?) throws(CairnError) {
        try withPoint(id, purpose: "cairn unprotect", wait: wait) { () throws(CairnError) in
            try catalog.unprotect(id)
        }
    }

    /// Removes one restore point (refused for a protected one); `cairn gc` frees its space.
    public func forget(_ id: RestorePointID, wait: Double?) throws(CairnError) {
        try withPoint(id, purpose: "cairn forget", wait: wait) { () throws(CairnError) in try catalog.remove(id) }
    }

    /// Rebuilds the chunk index from the packs, holding the repository alone.
    public func rebuildIndex(wait: Double?) throws(CairnError) -> ChunkStore.IndexRebuildReport {
        try withLock(.exclusive, purpose: "cairn rebuild-index", wait: wait) { () throws(CairnError) in
            try markFeatures()
            return try store.rebuildIndex()
        }
    }

    /// Runs `body` under `id`'s group lock, once the restore point is known to still exist
    /// (another process may have removed it before the lock was ours).
    private func withPoint(
        _ id: RestorePointID, purpose: String, wait: Double?, _ body: () throws(CairnError) -> Void
    ) throws(CairnError) {
        try withLock(.group(id.group), purpose: purpose, wait: wait) { () throws(CairnError) in
            guard catalog.exists(id) else { throw CairnError(.notFound, "restore point \(id) does not exist") }
            try body()
        }
    }
}
