import CairnTestSupport
import Dispatch
import Foundation
import Synchronization
import Testing

@testable import CairnCore

/// The one pipeline: order, bounds, errors; and the archive restore plan that its workers share.
@Suite struct PipelineTests {
    final class Box: Sendable {
        let value: Int
        let work = AtomicCounter()
        init(_ value: Int) { self.value = value }
    }

    /// Items in a worker now, and the most there ever were.
    final class Gauge: Sendable {
        let now = Atomic<Int>(0)
        let most = Atomic<Int>(0)
    }

    @Test(arguments: [1, 2, 4, 8])
    func deliversInSubmissionOrder(workers: Int) throws {
        let gauge = Gauge()
        let pipeline = Pipeline<Int>(name: "test-order", workers: workers, delivery: .inOrder, capacity: 5) { _ in
            return { (item: inout Int) throws(CairnError) in
                let now = gauge.now.wrappingAdd(1, ordering: .relaxed).newValue
                _ = gauge.most.max(now, ordering: .relaxed)
                usleep(UInt32.random(in: 0...300))  // finish out of order
                gauge.now.wrappingSubtract(1, ordering: .relaxed)
                item *= 2
            }
        }
        pipeline.startSource(name: "test-source") { (pipeline) throws(CairnError) in
            for i in 0..<500 { try pipeline.submit(i) }
        }
        var seen: [Int] = []
        while let item = try pipeline.next() { seen.append(item) }
        try pipeline.finish()
        #expect(seen == (0..<500).map { $0 * 2 })
        #expect(gauge.most.load(ordering: .relaxed) <= min(workers, 5))
    }

    @Test func submitWaitsWhileCapacityIsInFlight() throws {
        let submitted = AtomicCounter()
        let pipeline = Pipeline<Int>(name: "test-bound", workers: 2, delivery: .inOrder, capacity: 3) { _ in
            return { (_: inout Int) throws(CairnError) in }
        }
        pipeline.startSource(name: "test-source") { (pipeline) throws(CairnError) in
            for i in 0..<10 {
                try pipeline.submit(i)
                submitted.increment()
            }
        }
        // Nobody takes results: the source stops after `capacity` items.
        usleep(200_000)
        #expect(submitted.current == 3)
        var seen = 0
        while try pipeline.next() != nil { seen += 1 }
        try pipeline.finish()
        #expect(seen == 10)
    }

    @Test func recyclesAFixedPool() throws {
        let pool = (0..<4).map { Box($0) }
        let pipeline = Pipeline<Box>(name: "test-pool", workers: 3, delivery: .recycle, pool: pool) { _ in
            return { (box: inout Box) throws(CairnError) in box.work.increment() }
        }
        for _ in 0..<400 { try pipeline.submit(try pipeline.acquire()) }
        try pipeline.finish()
        #expect(pool.map(\.work.current).reduce(0, +) == 400)
    }

    @Test func aWorkersErrorStopsEveryStage() throws {
        let pipeline = Pipeline<Int>(name: "test-error", workers: 4, delivery: .inOrder, capacity: 8) { _ in
            return { (item: inout Int) throws(CairnError) in
                if item == 37 { throw CairnError(.damaged, "item 37 is bad") }
            }
        }
        pipeline.startSource(name: "test-source") { (pipeline) throws(CairnError) in
            for i in 0..<Int.max { try pipeline.submit(i) }  // ends only by the stop
        }
        var seen = 0
        do throws(CairnError) {
            while try pipeline.next() != nil { seen += 1 }
            Issue.record("the pipeline ended without its error")
        } catch {
            #expect(error.message == "item 37 is bad")
        }
        #expect(seen <= 37)
        do throws(CairnError) {
            try pipeline.finish()
            Issue.record("finish() did not throw the error")
        } catch {
            #expect(error.message == "item 37 is bad")
        }
    }

    @Test func theConsumersErrorStopsTheSource() throws {
        let pipeline = Pipeline<Int>(name: "test-stop", workers: 2, delivery: .inOrder, capacity: 4) { _ in
            return { (_: inout Int) throws(CairnError) in }
        }
        pipeline.startSource(name: "test-source") { (pipeline) throws(CairnError) in
            for i in 0..<Int.max { try pipeline.submit(i) }
        }
        _ = try pipeline.next()
        #expect(pipeline.stop(CairnError(.io, "the writer failed")))
        #expect(!pipeline.stop(CairnError(.io, "a consequence")))
        #expect(throws: CairnError.self) { try pipeline.finish() }
        #expect(pipeline.error?.message == "the writer failed")
    }

    /// The same chunk handed to many workers at once (an archive may carry a chunk twice) is
    /// written once per block and counted once: `written` is the disk's size, not a multiple.
    @Test func archiveRestorePlanWritesEachBlockOnce() throws {
        let dir = TemporaryDirectory("cairn-plan")
        let blockSize: UInt64 = 4096
        let blocks: UInt64 = 2048
        let size = blockSize * blocks
        let chunk = [UInt8](repeating: 0x5A, count: Int(blockSize))
        let digest = chunk.withUnsafeBytes { SHA256Hasher().digest($0) }
        let table = BlockDigestTable(directory: dir.path)
        var nonZero = ClusterBitmap(clusterCount: blocks)
        for block in 0..<blocks {
            try table.append(digest, block: block)
            nonZero.set(block)
        }
        try table.finish()
        let target = try RawRestoreTarget(path: dir.file("out.img"), size: size, force: false)
        let plan = ArchiveRestore.Plan(
            table: table, nonZero: nonZero, target: target, size: size, blockSize: blockSize)
        let failures = AtomicCounter()
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            chunk.withUnsafeBytes { bytes in
                do throws(CairnError) {
                    try plan.write(digest, bytes)
                } catch {
                    failures.increment()
                }
            }
        }
        #expect(failures.current == 0)
        #expect(plan.written.current == Int(size))
        #expect(plan.missing == nil)
        try target.finish()
        let restored = try Data(contentsOf: URL(fileURLWithPath: dir.file("out.img")))
        #expect(restored.count == Int(size) && restored.allSatisfy { $0 == 0x5A })
    }
}
