import CairnCore

/// A real repository in the scratch directory, made once per run with `Repository.create` and
/// emptied between inputs, into which targets drop hostile files (a pack, a segment, a manifest)
/// or well-formed ones that they build around hostile contents (index pages).
public final class FuzzRepository {
    public let path: String
    /// Small blocks keep seeds and pages small; every block size takes the same code paths.
    public static let blockSize = 4096
    public static let time = "2026-11-26T03:00:00Z"

    public init(in scratch: Scratch, name: String = "repo") {
        path = "\(scratch.path)/\(name)"
        do {
            try Repository.create(at: path, blockSize: Self.blockSize, compressionLevel: 1)
        } catch {
            fatalError("cannot create the fuzz repository \(path): \(error)")
        }
    }

    /// Removes what the previous input left: packs, segments, restore points, verify results.
    public func clear() {
        for sub in ["packs", "index", "points", "verify"] {
            Scratch.removeTree("\(path)/\(sub)")
        }
        for sub in ["packs", "index", "points"] {
            try? FileSystem.createDirectories("\(path)/\(sub)")
        }
    }

    public func open() throws(CairnError) -> Repository {
        try Repository(path: path)
    }

    /// One disk of a manifest written by `writeManifest`.
    public struct Disk {
        public var name: String
        public var size: UInt64
        public var blockCount: UInt64
        public var root: ChunkDigest
        public var depth: Int

        public init(name: String, size: UInt64, blockCount: UInt64, root: ChunkDigest, depth: Int) {
            self.name = name
            self.size = size
            self.blockCount = blockCount
            self.root = root
            self.depth = depth
        }
    }

    /// The manifest of restore point `group@time` for `disks`, in the form Cairn writes
    /// (docs/FORMAT.md, "Manifests"): one JSON line, then `sha256 HEX` of it.
    public static func manifestBytes(group: String, disks: [Disk], blockSize: Int = blockSize) -> [UInt8] {
        let entries = disks.map { d in
            """
            {"blockCount":\(d.blockCount),"changedBlocks":0,"depth":\(d.depth),"name":"\(d.name)",\
            "root":"\(d.root.hex)","size":\(d.size),\
            "source":{"format":"raw","path":"/fuzz/\(d.name)","virtualSize":\(d.size)},"zeroBlocks":0}
            """
        }
        let line = """
            {"blockSize":\(blockSize),"disks":[\(entries.joined(separator: ","))],"format":1,\
            "group":"\(group)","id":"\(group)@\(time)","repository":"00000000000000000000000000000000",\
            "stats":{"bytesNew":0,"bytesRead":0,"bytesStored":0,"chunksNew":0,"seconds":0},\
            "time":"\(time)","tool":"cairn fuzz"}
            """
        return withChecksumLine(Array(line.utf8))
    }

    /// `line` followed by the checksum line a manifest needs.
    public static func withChecksumLine(_ line: [UInt8]) -> [UInt8] {
        line + Array("\nsha256 \(SHA256Hasher().digest(line).hex)\n".utf8)
    }

    public func writeManifest(_ bytes: [UInt8], group: String) {
        let directory = "\(path)/points/\(group)"
        try? FileSystem.createDirectories(directory)
        write(bytes, to: "\(directory)/\(Self.time).manifest")
    }

    /// A chunk to store with `writePack`: stored uncompressed, named by the SHA-256 of `bytes`.
    public struct Chunk {
        public var bytes: [UInt8]
        public var kind: ChunkKind
        public init(bytes: [UInt8], kind: ChunkKind) {
            self.bytes = bytes
            self.kind = kind
        }
    }

    /// Writes a well-formed pack holding `chunks` and an index segment naming them, as a backup
    /// would (docs/FORMAT.md, "Pack files", "Chunk index segments"). Returns the chunks' digests.
    @discardableResult
    public func writePack(_ chunks: [Chunk]) -> [ChunkDigest] {
        let id = PackID(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210)
        let hasher = SHA256Hasher()
        var pack = PackFormat.headerMagic + id.bytes + [UInt8](repeating: 0, count: 8)
        var table: [UInt8] = []
        var entries: [(ChunkDigest, ChunkLocation)] = []
        var digests: [ChunkDigest] = []
        for chunk in chunks {
            let digest = hasher.digest(chunk.bytes)
            digests.append(digest)
            let offset = UInt64(pack.count)
            var header = RecordHeader(
                digest: digest, storedLength: chunk.bytes.count, rawLength: chunk.bytes.count, kind: chunk.kind,
                compression: .none
            ).bytes
            let crc = chunk.bytes.withUnsafeBytes { payload in
                header.withUnsafeBytes { h in
                    CRC32.checksum(payload, seed: CRC32.checksum(UnsafeRawBufferPointer(rebasing: h[0..<44])))
                }
            }
            header.setLE32(crc, at: 44)
            pack += header + chunk.bytes
            table += digest.bytes
            var fields = [UInt8](repeating: 0, count: 28)
            fields.setLE64(offset, at: 0)
            fields.setLE32(UInt32(chunk.bytes.count), at: 8)
            fields.setLE32(UInt32(chunk.bytes.count), at: 12)
            fields[16] = chunk.kind.rawValue
            fields[17] = ChunkCompression.none.rawValue
            fields.setLE32(crc, at: 20)
            table += fields
            entries.append(
                (
                    digest,
                    ChunkLocation(
                        pack: id, offset: offset, storedLength: UInt32(chunk.bytes.count),
                        rawLength: UInt32(chunk.bytes.count))
                ))
        }
        var footer = [UInt8](repeating: 0, count: 16)
        footer.setLE64(UInt64(pack.count), at: 0)
        footer.setLE32(UInt32(chunks.count), at: 8)
        footer.setLE32(table.crc32(0..<table.count), at: 12)
        pack += table + footer + id.bytes + PackFormat.footerMagic
        write(pack, to: "\(path)/\(id.relativePath)")
        do {
            try IndexSegment.write(entries: entries, to: "\(path)/index/0000000000000000-00000000.idx")
        } catch {
            fatalError("cannot write the fuzz index segment: \(error)")
        }
        return digests
    }

    /// Writes `bytes` to the absolute path `full`, making its directory.
    public func write(_ bytes: [UInt8], to full: String) {
        do {
            try FileSystem.createDirectories(FileSystem.directoryName(full))
            let file = try File.open(full, .createOrTruncate)
            try file.write(bytes, at: 0)
        } catch {
            fatalError("cannot write \(full): \(error)")
        }
    }
}
