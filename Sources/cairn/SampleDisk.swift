import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

/// A deterministic sample disk for the demo: text-like compressible regions, some random ones,
/// and holes, roughly like a lightly used guest filesystem.
struct SampleDisk {
    private var state: UInt64

    init(seed: UInt64) { state = seed | 1 }

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    mutating func create(path: String, size: UInt64) throws(CairnError) {
        let file = try File.open(path, .createOrTruncate)
        try file.truncate(to: size)
        let extent = 1 << 20
        var buffer = [UInt8](repeating: 0, count: extent)
        var offset: UInt64 = 0
        while offset + UInt64(extent) <= size {
            let roll = next() % 10
            if roll < 3 {
                fillText(&buffer)
                try file.write(buffer, at: offset)
            } else if roll == 3 {
                fillRandom(&buffer)
                try file.write(buffer, at: offset)
            }
            offset += UInt64(extent)
        }
        try file.sync()
    }

    /// Writes `count` extents of 4-256 KiB at random offsets, as a guest would during a day.
    mutating func scatterWrites(path: String, count: Int) throws(CairnError) {
        let file = try File.open(path, .readWrite)
        let size = try file.size()
        for _ in 0..<count {
            let length = Int(4096 * (1 + next() % 64))
            var buffer = [UInt8](repeating: 0, count: length)
            if next() % 2 == 0 { fillText(&buffer) } else { fillRandom(&buffer) }
            let offset = (next() % (size - UInt64(length))) & ~4095
            try file.write(buffer, at: offset)
        }
        try file.sync()
    }

    private mutating func fillText(_ buffer: inout [UInt8]) {
        let words = [
            "backup", "restore", "cluster", "guest", "kernel", "sector", "chunk", "digest", "volume", "tape",
            "the", "of", "and", "a", "to", "in", "is", "ext4", "inode", "journal",
        ]
        var i = 0
        while i < buffer.count {
            let word = words[Int(next() % UInt64(words.count))].utf8
            for c in word where i < buffer.count {
                buffer[i] = c
                i += 1
            }
            if i < buffer.count {
                buffer[i] = next() % 12 == 0 ? 10 : 32
                i += 1
            }
        }
    }

    private mutating func fillRandom(_ buffer: inout [UInt8]) {
        buffer.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= raw.count {
                raw.storeBytes(of: next(), toByteOffset: i, as: UInt64.self)
                i += 8
            }
        }
    }

    static func digest(of path: String) throws(CairnError) -> ChunkDigest {
        try SHA256Hasher.digest(ofFile: path)
    }
}
