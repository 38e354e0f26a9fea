import CairnCore
import Dispatch

#if canImport(Glibc)
    import Glibc
#endif

// The machine's limits on a workload's own data (issue 19): what a backup, restore or verify of
// that disk could cost at best on this machine, so that Benchmarks/bench.py can print each step's
// time as a ratio to its limit, measured in the same run as the tools.
//
//   cairn-limits DISK [--level N] [--block-size B] [--sample-mib M] [--scratch DIR]
//
// Reads a sample of DISK's allocated, non-zero data (runs of one frame window, spread evenly over
// the allocated extents) and measures, per core and on all cores at once:
// - SHA-256 of each block (libcrypto, Cairn's hasher),
// - zstd compression of each frame window exactly as Cairn sets it up (ZstdCompressor at the
//   repository's level; level 1-2 carry Cairn's frame tuning), and the ratio,
// - decompression of those frames, CRC-32 of the stored bytes, AES-256-GCM sealing of them as an
//   encrypted repository seals a record (a per-record key from HMAC-SHA256, then the seal),
// - page-cache reads of the sampled runs (already cached) and writes of them into a fresh file
//   in the scratch directory (new page cache, as a restore writes).
// Prints one JSON object on stdout. Rates are bytes of plain data per second.

struct Options {
    var disk = ""
    var level: Int32 = 2
    var blockSize = 65536
    var sampleBytes = 256 << 20
    var scratch = "/tmp"
}

func fail(_ message: String) -> Never {
    fputs("cairn-limits: \(message)\n", stderr)
    exit(2)
}

func parseOptions() -> Options {
    var options = Options()
    var args = CommandLine.arguments.dropFirst()
    func value(_ flag: String) -> String {
        guard let v = args.popFirst() else { fail("\(flag) needs a value") }
        return v
    }
    while let arg = args.popFirst() {
        switch arg {
        case "--level": options.level = Int32(value(arg)) ?? { fail("--level needs a number") }()
        case "--block-size": options.blockSize = Int(value(arg)) ?? { fail("--block-size needs bytes") }()
        case "--sample-mib": options.sampleBytes = (Int(value(arg)) ?? { fail("--sample-mib needs a number") }()) << 20
        case "--scratch": options.scratch = value(arg)
        case "-h", "--help":
            print("usage: cairn-limits DISK [--level N] [--block-size B] [--sample-mib M] [--scratch DIR]")
            exit(0)
        default:
            if arg.hasPrefix("-") || !options.disk.isEmpty { fail("unexpected argument \(arg)") }
            options.disk = arg
        }
    }
    if options.disk.isEmpty { fail("name the disk image (raw) to sample") }
    return options
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The allocated extents of `fd` (SEEK_DATA / SEEK_HOLE), as (offset, length).
func dataExtents(_ fd: Int32, size: Int) -> [(Int, Int)] {
    var extents: [(Int, Int)] = []
    var at = 0
    while at < size {
        let data = lseek(fd, off_t(at), 3)  // SEEK_DATA (Glibc does not export it to Swift)
        if data < 0 { break }
        let hole = lseek(fd, data, 4)  // SEEK_HOLE
        let end = hole < 0 ? size : Int(hole)
        extents.append((Int(data), end - Int(data)))
        at = end
    }
    return extents
}

let options = parseOptions()
let window = PackFormat.maxFrameBytes
precondition(window % options.blockSize == 0)
let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

let fd = open(options.disk, O_RDONLY)
if fd < 0 { fail("cannot open \(options.disk): \(String(cString: strerror(errno)))") }
var st = stat()
fstat(fd, &st)
let diskSize = Int(st.st_size)
let extents = dataExtents(fd, size: diskSize)
let allocated = extents.reduce(0) { $0 + $1.1 }
if allocated == 0 { fail("\(options.disk) holds no data") }

// Window-aligned runs inside the extents, spread evenly: every k-th run of the allocated data.
var runs: [Int] = []
for (offset, length) in extents {
    var start = (offset + window - 1) / window * window
    while start + window <= offset + length {
        runs.append(start)
        start += window
    }
}
if runs.isEmpty { fail("\(options.disk) has no aligned \(window >> 20) MiB run of data to sample") }
let wanted = max(1, min(runs.count, options.sampleBytes / window))
let stride = Double(runs.count) / Double(wanted)
let chosen = (0..<wanted).map { runs[Int(Double($0) * stride)] }

let sample = UnsafeMutableRawBufferPointer.allocate(byteCount: chosen.count * window, alignment: 4096)
defer { sample.deallocate() }
for (i, offset) in chosen.enumerated() {
    let n = pread(fd, sample.baseAddress! + i * window, window, off_t(offset))
    if n != window { fail("short read of \(options.disk) at \(offset)") }
}

func run(_ i: Int) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: sample[(i * window)..<((i + 1) * window)])
}
/// Blocks of the sample that Cairn would store (all-zero blocks cost nothing and are left out).
let blocksPerRun = window / options.blockSize
var dataBlocks: [Int] = []
for b in 0..<(chosen.count * blocksPerRun) {
    let block = UnsafeRawBufferPointer(
        rebasing: sample[(b * options.blockSize)..<((b + 1) * options.blockSize)])
    if !block.isAllZero { dataBlocks.append(b) }
}
let dataBytes = dataBlocks.count * options.blockSize

// Compressed copies of each run (frames of the run's non-zero blocks, as a night-0 backup writes
// them when every block is new), kept for the decompression and CRC passes.
let bound = ZstdCompressor.bound(window)
let frames = UnsafeMutableRawBufferPointer.allocate(byteCount: chosen.count * bound, alignment: 64)
defer { frames.deallocate() }
var frameLengths = [Int](repeating: 0, count: chosen.count)
var framePlain = [Int](repeating: 0, count: chosen.count)
let gather = UnsafeMutableRawBufferPointer.allocate(byteCount: window, alignment: 64)
defer { gather.deallocate() }
let setupCompressor = ZstdCompressor(level: options.level)
for r in 0..<chosen.count {
    var plain = 0
    for b in (r * blocksPerRun)..<((r + 1) * blocksPerRun) {
        let block = UnsafeRawBufferPointer(
            rebasing: sample[(b * options.blockSize)..<((b + 1) * options.blockSize)])
        if block.isAllZero { continue }
        UnsafeMutableRawBufferPointer(rebasing: gather[plain..<(plain + options.blockSize)]).copyMemory(from: block)
        plain += options.blockSize
    }
    framePlain[r] = plain
    guard plain > 0 else { continue }
    let out = UnsafeMutableRawBufferPointer(rebasing: frames[(r * bound)..<((r + 1) * bound)])
    frameLengths[r] = setupCompressor.compress(UnsafeRawBufferPointer(rebasing: gather[0..<plain]), into: out) ?? 0
}
let storedBytes = zip(frameLengths, framePlain).reduce(0) { $0 + ($1.0 > 0 ? $1.0 : $1.1) }

/// A measurement: the best of `passes` timings of `work(worker, workers)` run on `workers`
/// threads at once, as plain bytes per second over all of them.
func rate(bytes: Int, workers: Int, passes: Int = 3, _ work: @Sendable @escaping (Int, Int) -> Void) -> Double {
    var best = Double.infinity
    for _ in 0..<passes {
        let start = now()
        DispatchQueue.concurrentPerform(iterations: workers) { w in work(w, workers) }
        best = min(best, now() - start)
    }
    return Double(bytes) / best
}

nonisolated(unsafe) let sampleBase = UnsafeRawBufferPointer(sample)
nonisolated(unsafe) let framesBase = UnsafeRawBufferPointer(frames)
let blockSize = options.blockSize
let level = options.level
let dataBlockList = dataBlocks
let lengths = frameLengths
let plains = framePlain
let runCount = chosen.count

func hashRate(_ workers: Int) -> Double {
    rate(bytes: dataBytes * workers, workers: workers) { _, _ in
        let hasher = SHA256Hasher()
        for b in dataBlockList {
            _ = hasher.digest(UnsafeRawBufferPointer(rebasing: sampleBase[(b * blockSize)..<((b + 1) * blockSize)]))
        }
    }
}

func compressRate(_ workers: Int) -> Double {
    rate(bytes: plains.reduce(0, +) * workers, workers: workers, passes: 2) { _, _ in
        let compressor = ZstdCompressor(level: level)
        let gather = UnsafeMutableRawBufferPointer.allocate(byteCount: window, alignment: 64)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: bound, alignment: 64)
        defer {
            gather.deallocate()
            out.deallocate()
        }
        for r in 0..<runCount {
            var plain = 0
            for b in (r * blocksPerRun)..<((r + 1) * blocksPerRun) {
                let block = UnsafeRawBufferPointer(rebasing: sampleBase[(b * blockSize)..<((b + 1) * blockSize)])
                if block.isAllZero { continue }
                UnsafeMutableRawBufferPointer(rebasing: gather[plain..<(plain + blockSize)]).copyMemory(from: block)
                plain += blockSize
            }
            if plain > 0 { _ = compressor.compress(UnsafeRawBufferPointer(rebasing: gather[0..<plain]), into: out) }
        }
    }
}

func decompressRate(_ workers: Int) -> Double {
    rate(bytes: plains.reduce(0, +) * workers, workers: workers) { _, _ in
        let decompressor = ZstdDecompressor()
        let plain = UnsafeMutableRawBufferPointer.allocate(byteCount: window, alignment: 64)
        defer { plain.deallocate() }
        for r in 0..<runCount where lengths[r] > 0 {
            _ = try? decompressor.decompress(
                UnsafeRawBufferPointer(rebasing: framesBase[(r * bound)..<(r * bound + lengths[r])]), into: plain)
        }
    }
}

func crcRate(_ workers: Int) -> Double {
    rate(bytes: storedBytes * workers, workers: workers) { _, _ in
        for r in 0..<runCount {
            let n = lengths[r] > 0 ? lengths[r] : plains[r]
            let base = lengths[r] > 0 ? framesBase : sampleBase
            let from = lengths[r] > 0 ? r * bound : r * window
            _ = CRC32.checksum(UnsafeRawBufferPointer(rebasing: base[from..<(from + n)]))
        }
    }
}

/// AES-256-GCM as an encrypted repository seals a record: a key per record from HMAC-SHA256 of a
/// random salt, then the compressed frame sealed (docs/FORMAT.md, "Sealed records").
/// Bytes are the stored (compressed) bytes sealed; opening costs the same.
func sealRate(_ workers: Int) -> Double {
    rate(bytes: storedBytes * workers, workers: workers) { _, _ in
        let sealer = AESGCM()
        let derive = HMACSHA256(key: SecretKey.random())
        let nonce = [UInt8](repeating: 0, count: AESGCM.nonceSize)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bound, window) + AESGCM.tagSize, alignment: 64)
        defer { out.deallocate() }
        var salt = [UInt8](repeating: 0, count: 32)
        nonce.withUnsafeBytes { nonce in
            for r in 0..<runCount {
                let n = lengths[r] > 0 ? lengths[r] : plains[r]
                let base = lengths[r] > 0 ? framesBase : sampleBase
                let from = lengths[r] > 0 ? r * bound : r * window
                salt[0] = UInt8(truncatingIfNeeded: r)
                // The codec's key is this HMAC's output; a random key costs the same to use.
                _ = derive.authenticate(salt)
                let key = SecretKey.random()
                sealer.seal(
                    UnsafeRawBufferPointer(rebasing: base[from..<(from + n)]), key: key, nonce: nonce,
                    aad: UnsafeRawBufferPointer(rebasing: base[from..<(from + 38)]),
                    into: UnsafeMutableRawBufferPointer(rebasing: out[0..<(n + AESGCM.tagSize)]))
            }
        }
    }
}

/// Page-cache reads of the sampled runs (cached by the sampling read above), on one thread.
func readRate() -> Double {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: window, alignment: 4096)
    defer { buffer.deallocate() }
    return rate(bytes: runCount * window, workers: 1) { _, _ in
        for offset in chosen { _ = pread(fd, buffer.baseAddress, window, off_t(offset)) }
    }
}

/// Writes of the sample into a fresh file (new page cache, no fsync), on one thread.
func writeRate() -> Double {
    let path = "\(options.scratch)/cairn-limits-\(getpid()).tmp"
    defer { unlink(path) }
    return rate(bytes: runCount * window, workers: 1) { _, _ in
        unlink(path)
        let out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if out < 0 { fail("cannot write \(path): \(String(cString: strerror(errno)))") }
        for r in 0..<runCount { _ = pwrite(out, sampleBase.baseAddress! + r * window, window, off_t(r * window)) }
        close(out)
    }
}

func json(_ v: Double) -> String { String(Int((v).rounded())) }

let perCore = (
    hash: hashRate(1), compress: compressRate(1), decompress: decompressRate(1), crc: crcRate(1), seal: sealRate(1)
)
let allCores = (
    hash: hashRate(cores), compress: compressRate(cores), decompress: decompressRate(cores), crc: crcRate(cores),
    seal: sealRate(cores)
)
let read = readRate()
let write = writeRate()
close(fd)

print(
    """
    {"disk": "\(options.disk)", "disk_bytes": \(diskSize), "allocated_bytes": \(allocated), \
    "sample_bytes": \(runCount * window), "sample_data_bytes": \(dataBytes), "sample_stored_bytes": \(storedBytes), \
    "compress_ratio": \(Double(storedBytes) / Double(max(1, dataBytes))), \
    "block_size": \(blockSize), "frame_window": \(window), "zstd_level": \(level), "cores": \(cores), \
    "per_core": {"sha256": \(json(perCore.hash)), "compress": \(json(perCore.compress)), \
    "decompress": \(json(perCore.decompress)), "crc32": \(json(perCore.crc)), "aes256gcm": \(json(perCore.seal))}, \
    "all_cores": {"sha256": \(json(allCores.hash)), "compress": \(json(allCores.compress)), \
    "decompress": \(json(allCores.decompress)), "crc32": \(json(allCores.crc)), "aes256gcm": \(json(allCores.seal))}, \
    "page_cache_read": \(json(read)), "page_cache_write": \(json(write))}
    """)
