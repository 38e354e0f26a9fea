import CairnTestSupport
import Dispatch
import Foundation
import Testing

@testable import CairnCore

/// A raw restore target writes aligned runs around the page cache and the rest through it; the
/// file must hold exactly what was written, whichever path each write took and in any order.
@Suite struct RawRestoreTargetTests {
    /// Runs larger than the bounce buffer, page-aligned runs, a run at an odd length and an odd
    /// last block, written from several threads in shuffled order, against the bytes expected;
    /// holes stay zero.
    @Test func mixedAlignedAndUnalignedWritesLandExactly() throws {
        let dir = TemporaryDirectory("cairn-raw-target")
        let size: UInt64 = (12 << 20) + 1234
        var expected = [UInt8](repeating: 0, count: Int(size))
        var generator = SplitMix(seed: 19)
        let runs: [(offset: Int, length: Int)] = [
            (0, 5 << 20 + 8192),  // split across the 2 MiB bounce buffer
            (6 << 20, 4096), (7 << 20, 64 << 10), (8 << 20, 3 << 20),
            (11 << 20 + 65536, 4000),  // aligned start, odd length: through the page cache
            (12 << 20, 1234),  // the odd-sized disk's last block
        ]
        for run in runs {
            for index in run.offset..<run.offset + run.length {
                expected[index] = UInt8(truncatingIfNeeded: generator.next()) | 1
            }
        }
        let target = try RawRestoreTarget(path: dir.file("out.raw"), size: size, force: false)
        let failures = AtomicCounter()
        let order = [3, 0, 5, 1, 4, 2]
        let bytes = expected
        DispatchQueue.concurrentPerform(iterations: order.count) { i in
            let run = runs[order[i]]
            bytes.withUnsafeBytes { all in
                do throws(CairnError) {
                    try target.write(
                        UnsafeRawBufferPointer(rebasing: all[run.offset..<run.offset + run.length]),
                        atGuestOffset: UInt64(run.offset))
                } catch {
                    failures.increment()
                }
            }
        }
        try target.finish()
        #expect(failures.current == 0)
        let restored = try Data(contentsOf: URL(fileURLWithPath: dir.file("out.raw")))
        #expect(restored.count == Int(size))
        #expect(restored.elementsEqual(expected))
    }
}
