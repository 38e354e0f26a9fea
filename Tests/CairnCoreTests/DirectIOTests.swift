import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// Packs are written and read around the page cache (`DirectAppender`, `DirectReader`); what
/// lands and what is read back must be exactly the bytes, at every alignment, on a filesystem
/// that takes O_DIRECT and on one that refuses it (tmpfs), and a failed write must never be
/// forgotten by a later append or commit.
@Suite struct DirectIOTests {
    /// Directories to try: the test's own (ext4 here, direct) and tmpfs (no direct, on the
    /// kernels of Debian 12), when it is there.
    static func directories() -> [TemporaryDirectory] {
        var dirs = [TemporaryDirectory("cairn-direct-io")]
        if FileManager.default.isWritableFile(atPath: "/dev/shm") {
            dirs.append(TemporaryDirectory("cairn-direct-io", in: "/dev/shm"))
        }
        return dirs
    }

    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var generator = SplitMix(seed: seed)
        return (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
    }

    /// Appends of odd sizes, one larger than the buffer, one that fills it to the byte, then a
    /// tail that is neither aligned nor empty: the file holds them in order, and `size` counted
    /// them all along.
    @Test func appendsLandInOrderWhateverTheirSizes() throws {
        for dir in Self.directories() {
            let path = dir.file("pack")
            let file = try File.open(path, .createNew)
            let appender = DirectAppender(file: file)
            let lengths = [
                48, 1000, 4096, DirectAppender.pieceSize + 777, 3, DirectAppender.pieceSize - 1924, 65536, 12345,
            ]
            var expected: [UInt8] = []
            for (i, length) in lengths.enumerated() {
                let part = Self.bytes(length, seed: UInt64(i))
                try part.withUnsafeBytes { try appender.append($0) }
                expected += part
                #expect(appender.size == UInt64(expected.count))
            }
            try appender.finish()
            try appender.finish()  // a second finish writes nothing more
            let written = try Data(contentsOf: URL(fileURLWithPath: path))
            #expect(written.count == expected.count, "\(path)")
            #expect(written.elementsEqual(expected), "\(path)")
        }
    }

    /// A write that fails (a full device) fails that append, every later one, and `finish()`:
    /// the bytes counted as appended are not on the file, so nothing may commit it.
    @Test func aFailedWriteFailsEverythingAfter() throws {
        let file = try File.open("/dev/full", .readWrite)
        let appender = DirectAppender(file: file)
        let big = Self.bytes(DirectAppender.pieceSize + 10, seed: 7)
        #expect(throws: CairnError.self) {
            try big.withUnsafeBytes { try appender.append($0) }
        }
        #expect(throws: CairnError.self) {
            try [UInt8(1)].withUnsafeBytes { try appender.append($0) }
        }
        #expect(throws: CairnError.self) { try appender.finish() }
    }

    /// Ranges at every kind of alignment, across the end of the file and past it: the same
    /// bytes as a plain read.
    @Test func directReadsMatchPlainReads() throws {
        for dir in Self.directories() {
            let path = dir.file("data")
            let size = (3 << 20) + 1111
            let content = Self.bytes(size, seed: 3)
            try Data(content).write(to: URL(fileURLWithPath: path))
            let object = try LocalDirectoryStorage(root: dir.path).openRecords("data")
            let ranges: [(offset: Int, count: Int)] = [
                (0, 32 << 10), (4096, 64 << 10), (1, 40000), (4095, 2 << 20), (size - 50000, 50000),
                (size - 40000, 100_000), (size, 40000), (size + 5000, 40000), (12345, 10),
            ]
            for range in ranges {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: range.count, alignment: 1)
                defer { buffer.deallocate() }
                let n = try object.read(into: buffer, at: UInt64(range.offset))
                let start = min(range.offset, size)
                let end = min(range.offset + range.count, size)
                #expect(n == end - start, "\(path) at \(range.offset)")
                #expect(buffer[0..<n].elementsEqual(content[start..<end]), "\(path) at \(range.offset)")
            }
        }
    }
}
