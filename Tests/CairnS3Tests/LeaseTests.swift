import CairnCore
import CairnS3
import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// Leases (`LeaseLocking`): the locks of a repository shared by hosts, on a local directory and
/// on the real radosgw, with the same code.
@Suite struct LeaseTests {
    /// A lease object as another host would have left it.
    func foreignLease(host: String, pid: Int32, expiresIn seconds: Int64, purpose: String = "cairn backup") -> Lease {
        let now = Timestamp.now()
        return Lease(
            host: host, pid: pid, purpose: purpose, created: Timestamp(seconds: now.seconds - 600).description,
            expires: Timestamp(seconds: now.seconds + seconds).description, token: "feedface\(host)")
    }

    func busyMessage(_ body: () throws(CairnError) -> RepositoryLock) -> String? {
        do throws(CairnError) {
            _ = try body()
            return nil
        } catch {
            #expect(error.code == .busy)
            return error.message
        }
    }

    @Test(arguments: StorageKind.available)
    func aSecondHolderOfAGroupFailsNamingTheFirstOthersGoOn(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let locking = LeaseLocking(storage: fixture.storage)
        var first: RepositoryLock? = try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        let lease = try #require(try Lease.read("locks/group.vm1.lease", from: fixture.storage))
        #expect(lease.host == Lease.hostName && lease.pid == getpid() && lease.purpose == "cairn backup")
        #expect(!lease.isExpired)
        let message = busyMessage { () throws(CairnError) in
            try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        }
        #expect(
            message
                == "group vm1 is locked by cairn backup on host \(Lease.hostName) (pid \(getpid()), since \(lease.created))"
        )
        // Another group does not wait: there is no repository-wide lease.
        let other = try locking.acquire(.group("vm2"), purpose: "cairn backup", wait: nil, onWait: nil)
        #expect(fixture.storage.exists("locks/group.vm2.lease"))
        withExtendedLifetime(other) {}
        _ = first
        first = nil
        #expect(!fixture.storage.exists("locks/group.vm1.lease"))
        _ = try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
    }

    /// A lease of this host whose process is gone (killed) is taken over at once; the same
    /// lease from another host is not (its processes cannot be seen from here).
    @Test(arguments: StorageKind.available)
    func aLeaseOfADeadProcessOfThisHostIsTakenOverAtOnce(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let exited = Process()
        exited.executableURL = URL(fileURLWithPath: "/bin/true")
        try exited.run()
        exited.waitUntilExit()
        let dead = exited.processIdentifier
        try fixture.storage.publish(
            try foreignLease(host: Lease.hostName, pid: dead, expiresIn: 300).bytes(), as: "locks/group.vm1.lease",
            .createOnly)
        try fixture.storage.publish(
            try foreignLease(host: "hv7", pid: dead, expiresIn: 300).bytes(), as: "locks/group.vm2.lease", .createOnly)
        let locking = LeaseLocking(storage: fixture.storage)
        let taken = try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        #expect(try Lease.read("locks/group.vm1.lease", from: fixture.storage)?.pid == getpid())
        withExtendedLifetime(taken) {}
        let message = busyMessage { () throws(CairnError) in
            try locking.acquire(.group("vm2"), purpose: "cairn backup", wait: nil, onWait: nil)
        }
        #expect(message?.contains("on host hv7 (pid \(dead)") == true, "\(message ?? "taken")")
    }

    @Test(arguments: StorageKind.available)
    func aLiveForeignLeaseIsNamedAndWaitedFor(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let foreign = foreignLease(host: "hv7", pid: 4242, expiresIn: 300)
        try fixture.storage.publish(try foreign.bytes(), as: "locks/group.vm1.lease", .createOnly)
        let locking = LeaseLocking(storage: fixture.storage)
        let notices = NoticeLog()
        let message = busyMessage { () throws(CairnError) in
            try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: 1, onWait: { notices.add($0) })
        }
        #expect(message?.hasPrefix("group vm1 is locked by cairn backup on host hv7 (pid 4242, since ") == true)
        #expect(message?.hasSuffix(" after waiting 1 s") == true)
        #expect(notices.lines.count == 1 && notices.lines[0].contains("host hv7"))
        // Left as it was.
        #expect(try Lease.read("locks/group.vm1.lease", from: fixture.storage) == foreign)
    }

    @Test(arguments: StorageKind.available)
    func anExpiredLeaseIsTakenOverOnce(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let dead = foreignLease(host: "hv-dead", pid: 99, expiresIn: -60)
        try fixture.storage.publish(try dead.bytes(), as: "locks/group.vm1.lease", .createOnly)
        let locking = LeaseLocking(storage: fixture.storage)
        let lock = try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        let now = try #require(try Lease.read("locks/group.vm1.lease", from: fixture.storage))
        #expect(now.host == Lease.hostName && now.pid == getpid() && now.token != dead.token)
        // The claim on the dead lease's token stays: no second taker can win it.
        #expect(fixture.storage.exists("locks/group.vm1.takeover.\(dead.token)"))
        try lock.check()
    }

    @Test(arguments: StorageKind.available)
    func aDamagedLeaseIsTakenOverEachTime(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let locking = LeaseLocking(storage: fixture.storage)
        for damage in ["{\"host\":", "not json at all"] {
            try fixture.storage.publish(Array(damage.utf8), as: "locks/group.vm1.lease", .replace)
            let lock = try locking.acquire(.group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
            #expect(try Lease.read("locks/group.vm1.lease", from: fixture.storage)?.pid == getpid())
            withExtendedLifetime(lock) {}
        }
    }

    @Test(arguments: StorageKind.available)
    func aClaimedExpiredLeaseIsBusyNotTakenTwice(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let dead = foreignLease(host: "hv-dead", pid: 99, expiresIn: -60)
        try fixture.storage.publish(try dead.bytes(), as: "locks/group.vm1.lease", .createOnly)
        // Another host won the claim and is about to delete and create.
        let taker = foreignLease(host: "hv-taker", pid: 98, expiresIn: 240)
        try fixture.storage.publish(try taker.bytes(), as: "locks/group.vm1.takeover.\(dead.token)", .createOnly)
        let message = busyMessage { () throws(CairnError) in
            try LeaseLocking(storage: fixture.storage).acquire(
                .group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        }
        #expect(message?.contains("host hv-taker (pid 98") == true, "\(message ?? "taken")")
        #expect(try Lease.read("locks/group.vm1.lease", from: fixture.storage) == dead)
    }

    /// A taker killed between winning its claim and deleting the lease (the CI run that found
    /// this: `kill -9` at a random moment) left the lease untakeable for good; a stale claim is
    /// now passed by for the next one.
    @Test(arguments: StorageKind.available)
    func aClaimLeftByADeadTakerIsPassedBy(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let dead = foreignLease(host: "hv-dead", pid: 99, expiresIn: -60)
        try fixture.storage.publish(try dead.bytes(), as: "locks/group.vm1.lease", .createOnly)
        let base = "locks/group.vm1.takeover.\(dead.token)"
        try fixture.storage.publish(
            try foreignLease(host: "hv-taker", pid: 98, expiresIn: -1).bytes(), as: base, .createOnly)
        try fixture.storage.publish(Array("{}".utf8), as: "\(base).1", .createOnly)
        let lock = try LeaseLocking(storage: fixture.storage).acquire(
            .group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        let now = try #require(try Lease.read("locks/group.vm1.lease", from: fixture.storage))
        #expect(now.host == Lease.hostName && now.pid == getpid())
        #expect(fixture.storage.exists("\(base).2"))
        withExtendedLifetime(lock) {}
    }

    @Test(arguments: StorageKind.available)
    func gcAndBackupsKeepOutOfEachOther(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let locking = LeaseLocking(storage: fixture.storage)
        var backup: RepositoryLock? = try locking.acquire(
            .group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        let gcRefused = busyMessage { () throws(CairnError) in
            try locking.acquire(.exclusive, purpose: "cairn gc", wait: nil, onWait: nil)
        }
        #expect(gcRefused?.hasPrefix("group vm1 is locked by cairn backup on host \(Lease.hostName)") == true)
        // gc let go of its own lease again.
        #expect(!fixture.storage.exists("locks/gc.lease"))
        // Restores and verify run beside backups.
        _ = try locking.acquire(.shared, purpose: "cairn restore", wait: nil, onWait: nil)
        _ = backup
        backup = nil

        let gc = try locking.acquire(.exclusive, purpose: "cairn gc", wait: nil, onWait: nil)
        for scope in [LockScope.group("vm2"), .shared, .exclusive] {
            let message = busyMessage { () throws(CairnError) in
                try locking.acquire(scope, purpose: "cairn backup", wait: nil, onWait: nil)
            }
            #expect(message?.hasPrefix("repository \(fixture.storage.location) is locked by cairn gc on host ") == true)
        }
        #expect(!fixture.storage.exists("locks/group.vm2.lease"))
        withExtendedLifetime(gc) {}
    }

    @Test(arguments: StorageKind.available)
    func aLeaseTakenOverIsLostRenewsNoMoreAndFailsTheCheck(kind: StorageKind) throws {
        let fixture = try StorageFixture(kind, "lease")
        let lock = try LeaseLocking(storage: fixture.storage).acquire(
            .group("vm1"), purpose: "cairn backup", wait: nil, onWait: nil)
        let held = try #require(lock.held as? HeldLease)
        let before = try #require(try Lease.read("locks/group.vm1.lease", from: fixture.storage))
        #expect(held.renew())
        #expect(try Lease.read("locks/group.vm1.lease", from: fixture.storage)?.token == before.token)
        // This host stalled; another took the lease over.
        let taker = foreignLease(host: "hv2", pid: 7, expiresIn: 300)
        try fixture.storage.publish(try taker.bytes(), as: "locks/group.vm1.lease", .replace)
        #expect(!held.renew())
        #expect(throws: CairnError.self) { try lock.check() }
        held.release()
        // The taker's lease is neither overwritten nor deleted.
        #expect(try Lease.read("locks/group.vm1.lease", from: fixture.storage) == taker)
    }
}

/// Lines a lock-wait observer was told, from any thread.
final class NoticeLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func add(_ line: String) { lock.withLock { stored.append(line) } }
    var lines: [String] { lock.withLock { stored } }
}
