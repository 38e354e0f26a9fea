import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

// Times each stage of the backup and restore hot path on one core, on realistic 64 KiB blocks,
// so that a regression shows where it is. Prints one line per stage: throughput and ns/block.

let blockSize = 65536
let blocks = 2048  // 128 MiB per pass

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` over the data `passes` times and reports the best pass.
func measure(_ name: String, bytes: Int, passes: Int = 3, _ body: () -> Void) {
    var best = Double.infinity
    for _ in 0..<passes {
        let start = now()
        body()
        best = min(best, now() - start)
    }
    let mbps = Double(bytes) / best / 1e6
    let perBlock = best / Double(bytes / blockSize) * 1e9
    let padded = name + String(repeating: " ", count: max(0, 34 - name.count))
    print(
        "\(padded) \(Units.formatDecimal(mbps, places: 0)) MB/s   \(Units.formatDecimal(perBlock, places: 0)) ns/block")
}

// Data: "text" (compressible like system files: words and numbers), "binary" (half random, half
// repeated structure), "random" (incompressible).
nonisolated(unsafe) var state: UInt64 = 0x9E37_79B9_7F4A_7C15
func next() -> UInt64 {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return state
}
func makeData(_ kind: String) -> UnsafeMutableRawBufferPointer {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks * blockSize, alignment: 4096)
    let words = Array("the of and block cluster guest kernel inode journal 0123456789 ".utf8)
    for i in 0..<buffer.count {
        switch kind {
        case "text": buffer[i] = words[Int(next() % UInt64(words.count))]
        case "binary":
            buffer[i] = (i / 4096) % 2 == 0 ? UInt8(truncatingIfNeeded: next()) : UInt8(truncatingIfNeeded: i & 0x3F)
        default: buffer[i] = UInt8(truncatingIfNeeded: next())
        }
    }
    return buffer
}

let total = blocks * blockSize
print("cairn micro-benchmarks: \(blocks) blocks of \(blockSize / 1024) KiB per pass, best of 3, one core")

for kind in ["text", "binary", "random"] {
    let data = makeData(kind)
    defer { data.deallocate() }
    func block(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: data[(i * blockSize)..<((i + 1) * blockSize)])
    }

    if kind == "text" {
        let hasher = SHA256Hasher()
        measure("sha256", bytes: total) { for i in 0..<blocks { _ = hasher.digest(block(i)) } }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        measure("zero detection (all-zero block)", bytes: total) {
            for _ in 0..<blocks { precondition(UnsafeRawBufferPointer(zeros).isAllZero) }
        }
        measure("zero detection (data block)", bytes: total) {
            for i in 0..<blocks { precondition(!block(i).isAllZero) }
        }
        zeros.deallocate()
        measure("crc32", bytes: total) { for i in 0..<blocks { _ = CRC32.checksum(block(i)) } }

        // Encryption at rest (issue 14): keyed ids replace SHA-256; records are sealed in place,
        // a 2 MiB frame or a single 64 KiB block at a time, as the record codec would.
        let mac = HMACSHA256(key: .random())
        measure("hmac-sha256 id", bytes: total) { for i in 0..<blocks { _ = mac.authenticate(block(i)) } }
        let cipher = AESGCM()
        let key = SecretKey.random()
        let nonce = [UInt8](repeating: 0, count: AESGCM.nonceSize)
        let sealed = UnsafeMutableRawBufferPointer.allocate(byteCount: total + AESGCM.tagSize, alignment: 64)
        defer { sealed.deallocate() }
        nonce.withUnsafeBytes { n in
            for frame in [2 << 20, blockSize] {
                let per = frame / blockSize
                let label = frame == blockSize ? "64 KiB records" : "2 MiB records"
                measure("aes-256-gcm seal (\(label))", bytes: total) {
                    for i in stride(from: 0, to: blocks, by: per) {
                        let plain = UnsafeRawBufferPointer(rebasing: data[(i * blockSize)..<((i + per) * blockSize)])
                        cipher.seal(
                            plain, key: key, nonce: n, aad: UnsafeRawBufferPointer(rebasing: data[0..<64]),
                            into: UnsafeMutableRawBufferPointer(rebasing: sealed[0..<(frame + AESGCM.tagSize)]))
                    }
                }
                let opened = UnsafeMutableRawBufferPointer.allocate(byteCount: frame, alignment: 64)
                defer { opened.deallocate() }
                measure("aes-256-gcm open (\(label))", bytes: total) {
                    for _ in stride(from: 0, to: blocks, by: per) {
                        precondition(
                            cipher.open(
                                UnsafeRawBufferPointer(rebasing: sealed[0..<(frame + AESGCM.tagSize)]), key: key,
                                nonce: n, aad: UnsafeRawBufferPointer(rebasing: data[0..<64]), into: opened))
                    }
                }
            }
        }
    }

    let out = UnsafeMutableRawBufferPointer.allocate(byteCount: ZstdCompressor.bound(blockSize), alignment: 64)
    defer { out.deallocate() }
    for level in [1, 3] {
        let compressor = ZstdCompressor(level: Int32(level))
        var stored = 0
        measure("zstd -\(level) compress (\(kind))", bytes: total) {
            stored = 0
            for i in 0..<blocks { stored += compressor.compress(block(i), into: out) ?? blockSize }
        }
        print("    ratio \(Units.formatDecimal(Double(stored) / Double(total), places: 3))")
    }
    if kind != "random" {
        let compressor = ZstdCompressor(level: 3)
        let decompressor = ZstdDecompressor()
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { plain.deallocate() }
        let n = compressor.compress(block(0), into: out)!
        measure("zstd decompress (\(kind))", bytes: total) {
            for _ in 0..<blocks {
                _ = try! decompressor.decompress(UnsafeRawBufferPointer(rebasing: out[0..<n]), into: plain)
            }
        }
    }
}

// Index lookups: one segment of a million digests, a mix of hits and misses.
let directory = "/tmp/cairn-micro-\(getpid())"
mkdir(directory, 0o700)
let count = 1 << 20
var entries: [(ChunkDigest, ChunkLocation)] = []
entries.reserveCapacity(count)
let pack = PackID.random()
for i in 0..<count {
    entries.append(
        (
            ChunkDigest(w0: next(), w1: next(), w2: next(), w3: next()),
            ChunkLocation(pack: pack, offset: UInt64(i), storedLength: 1, rawLength: 1)
        ))
}
try! IndexSegment.write(entries: entries, to: "\(directory)/segment.idx")
let segment = try! IndexSegment(path: "\(directory)/segment.idx")
let probes =
    entries.prefix(100_000).map(\.0)
    + (0..<100_000).map { _ in ChunkDigest(w0: next(), w1: next(), w2: next(), w3: next()) }
var best = Double.infinity
for _ in 0..<3 {
    let start = now()
    var hits = 0
    for d in probes where segment.lookup(d) != nil { hits += 1 }
    precondition(hits == 100_000)
    best = min(best, now() - start)
}
print(
    "index lookup (1 Mi entries)          \(Units.formatDecimal(Double(probes.count) / best / 1e6, places: 2)) M lookups/s   \(Units.formatDecimal(best / Double(probes.count) * 1e9, places: 0)) ns/lookup"
)
unlink("\(directory)/segment.idx")
rmdir(directory)
