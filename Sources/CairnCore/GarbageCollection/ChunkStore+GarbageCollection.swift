/// What verify, gc and rebuild-index need from the chunk store beyond backup and restore.
extension ChunkStore {
    /// Every committed pack in the storage (`packs/XX/ID.pack` whose fan-out directory XX is
    /// the start of ID; objects being written are not listed), sorted.
    func packFilesOnDisk() throws(CairnError) -> [PackID] {
        var out: [PackID] = []
        for key in try storage.list(prefix: "packs/") {
            let parts = key.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1].utf8.count == 2, parts[2].hasSuffix(".pack") else { continue }
            if let id = PackID(hex: String(parts[2].dropLast(5))), id.hex.hasPrefix(parts[1]) { out.append(id) }
        }
        return out.sorted()
    }

    func packPath(_ id: PackID) -> String { "\(root)/\(id.relativePath)" }

    /// Forgets cached pack readers (after gc deleted or replaced packs).
    func dropPackReaders() {
        packReaders.withLock { $0.removeAll() }
    }
}
