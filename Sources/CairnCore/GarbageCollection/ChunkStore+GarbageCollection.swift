/// What verify and gc need from the chunk store beyond backup and restore.
extension ChunkStore {
    /// Every pack file under `packs/` (completed packs only: temporary files are not listed).
    func packFilesOnDisk() throws(CairnError) -> [PackID] {
        var out: [PackID] = []
        for sub in try FileSystem.list("\(root)/packs") where sub.utf8.count == 2 {
            for name in try FileSystem.list("\(root)/packs/\(sub)")
            where name.hasSuffix(".pack") && !name.hasPrefix(".") {
                if let id = PackID(hex: String(name.dropLast(5))), id.hex.hasPrefix(sub) { out.append(id) }
            }
        }
        return out.sorted()
    }

    func packPath(_ id: PackID) -> String { "\(root)/\(id.relativePath)" }

    /// Forgets cached pack readers (after gc deleted or replaced packs).
    func dropPackReaders() {
        packReaders.withLock { $0.removeAll() }
    }
}
