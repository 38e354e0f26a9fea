import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Leases: the locks of a repository that several hosts share (an object store), where no
/// kernel releases the lock of a host that died (docs/FORMAT.md, "Lease objects").
///
/// A lease is a small JSON object, `locks/group.GROUP.lease` or `locks/gc.lease`, created with
/// `PublishMode.createOnly` (`If-None-Match: *`), so of two hosts that create it at once exactly
/// one succeeds. Its holder renews it (a new `expires`) every third of its lifetime while it
/// runs and deletes it when done; a lease left by a host that died expires and is then taken
/// over (at once, if it was this host's and its process is gone: `Lease.isStale`). There is no repository-wide lease: backups of different groups never wait for each other.
///
/// What each scope takes:
/// - `.group(G)`: the group's lease; then, if gc holds a live lease, it lets go again and waits
///   or fails naming gc.
/// - `.exclusive` (gc, repair, rebuild-index): `locks/gc.lease`; then, if any group's lease is
///   live, it lets go again and waits or fails naming it. Both sides create first and look second,
///   so of a backup and a gc that start together at least one sees the other.
/// - `.shared` (restore, verify, serve ...): nothing is created; it waits or fails only while a
///   live gc lease exists when it starts.
///
/// Taking over an expired lease: the taker first creates, create-only, a claim
/// `locks/NAME.takeover.TOKEN` named after the expired lease's token, and only its winner deletes
/// the lease and creates its own. Without the claim two takers could both delete and create (the
/// second deleting the first's new lease) and both run. Claims are tiny and stay (a claim for a
/// token can only be won once). What remains: a holder that stalled past its expiry (a suspended
/// VM, a clock far off) may wake after the takeover; its next renewal reads the lease, sees a
/// token not its own and marks the lock lost, and `RepositoryLock.check()` (called before a
/// commit) then fails the run, so it commits nothing. Between that read and its rewrite a
/// renewal could still overwrite a lease taken over in the same instant; that needs a stall of
/// two thirds of the lifetime ending exactly then, and costs at worst two backups of one group
/// at once, which the create-only manifests keep apart. Clocks are trusted (a check against the
/// store's clock comes later).
public struct LeaseLocking: RepositoryLocking {
    public let storage: any RepositoryStorage
    /// How long a lease lives without renewal.
    public let lifetime: Int64

    /// Five minutes: a host that dies holds a group at most that long.
    public static let defaultLifetime: Int64 = 300

    public init(storage: any RepositoryStorage, lifetime: Int64 = LeaseLocking.defaultLifetime) {
        self.storage = storage
        self.lifetime = max(3, lifetime)
    }

    static let gcKey = "locks/gc.lease"
    /// gc's own lease: one gc at a time, beside backups (`LockScope.collector`).
    static let collectorKey = "locks/collector.lease"

    /// gc condemns first and deletes on a later run: no lease keeps backups out while it runs.
    public var collectsBesideBackups: Bool { true }

    public func groupHoldersStarted(before time: Timestamp, margin: Int64) throws(CairnError) -> [String] {
        var holders: [String] = []
        let now = Timestamp.now()
        for key in try storage.list(prefix: "locks/group.") where key.hasSuffix(".lease") {
            guard let lease = try readLease(key) else { continue }
            // Its expiry as the holder's clock may have meant it, and its start likewise.
            guard let expiry = Timestamp(parsing: lease.expires), now < Timestamp(seconds: expiry.seconds + margin)
            else { continue }
            if let created = Timestamp(parsing: lease.created), created.seconds >= time.seconds + margin { continue }
            holders.append(lease.described)
        }
        return holders
    }
    static func groupKey(_ group: String) -> String { "locks/group.\(group).lease" }

    public func acquire(
        _ scope: LockScope, purpose: String, wait: Double?, onWait: LockWaitObserver?,
        groupFileName: (String) -> String
    ) throws(CairnError) -> RepositoryLock {
        let clock = Stopwatch()
        var announced = false
        // Waits or fails for `holder`; returns when the caller should try again.
        func busy(_ what: String, _ holder: Lease) throws(CairnError) {
            guard let wait, clock.elapsed < wait else {
                let waited = wait.map { " after waiting \(Units.formatDecimal($0, places: 0)) s" } ?? ""
                throw CairnError(.busy, "\(what) is locked by \(holder.described)\(waited)", remedy: .waitForLock)
            }
            if !announced, let onWait {
                announced = true
                onWait("waiting for the lease held by \(holder.described) on \(what)")
            }
            try Cancellation.check("nothing done (while waiting for \(what))")
            usleep(500_000)
        }
        while true {
            switch scope {
            case .shared:
                if let gc = try liveLease(Self.gcKey) {
                    try busy("repository \(storage.location)", gc)
                    continue
                }
                return RepositoryLock(held: NoLease())
            case .group(let group):
                precondition(GroupName.isValid(group), "a group lease for an unchecked group name")
                let key = Self.groupKey(groupFileName(group))
                switch try take(key, purpose: purpose) {
                case .holder(let holder):
                    try busy("group \(group)", holder)
                case .taken(let held):
                    if let gc = try liveLease(Self.gcKey) {
                        held.release()
                        try busy("repository \(storage.location)", gc)
                        continue
                    }
                    held.startRenewing()
                    return RepositoryLock(held: held)
                }
            case .exclusive:
                switch try take(Self.gcKey, purpose: purpose) {
                case .holder(let holder):
                    try busy("repository \(storage.location)", holder)
                case .taken(let held):
                    if let (group, holder) = try liveGroupLease() {
                        held.release()
                        try busy("group \(group)", holder)
                        continue
                    }
                    if let collector = try liveLease(Self.collectorKey) {
                        held.release()
                        try busy("repository \(storage.location)", collector)
                        continue
                    }
                    held.startRenewing()
                    return RepositoryLock(held: held)
                }
            case .collector:
                switch try take(Self.collectorKey, purpose: purpose) {
                case .holder(let holder):
                    try busy("gc of repository \(storage.location)", holder)
                case .taken(let held):
                    if let exclusive = try liveLease(Self.gcKey) {
                        held.release()
                        try busy("repository \(storage.location)", exclusive)
                        continue
                    }
                    held.startRenewing()
                    return RepositoryLock(held: held)
                }
            }
        }
    }

    enum Attempt {
        case taken(HeldLease)
        case holder(Lease)
    }

    /// Creates the lease `key`, taking it over if it expired; or names its live holder.
    func take(_ key: String, purpose: String) throws(CairnError) -> Attempt {
        for _ in 0..<8 {
            let mine = Lease.new(purpose: purpose, lifetime: lifetime)
            do throws(CairnError) {
                try storage.publish(try mine.bytes(), as: key, .createOnly)
                CairnLog.logger.info("lease taken: \(storage.describe(key)), expires \(mine.expires)")
                return .taken(HeldLease(storage: storage, key: key, lease: mine, lifetime: lifetime))
            } catch  where error.code == .exists {}
            guard let there = try readLease(key) else { continue }  // released meanwhile: try again
            guard there.isStale else { return .holder(there) }
            // Only the winner of the claim on this expired lease deletes it (see the type's comment).
            if let taker = try claim(there, of: key, as: mine) { return .holder(taker) }
            CairnLog.logger.warning(
                "taking over the expired lease \(storage.describe(key)) of \(there.described)")
            try storage.delete([key])
        }
        throw CairnError(.busy, "\(storage.describe(key)) keeps changing: another host is taking and releasing it")
    }

    /// How many claims one expired lease may collect before takers give up: each is won once,
    /// and a further one is tried only when the one before it is stale.
    static let claimLimit = 16

    /// Claims the right to take over the expired lease `there` under `key`; nil when this
    /// process won it, else the live taker that did.
    ///
    /// The first claim is `locks/NAME.takeover.TOKEN`; a taker that won it and died before it
    /// deleted the lease (killed between the two requests) would otherwise keep the lease from
    /// ever being taken over, so a claim that is stale itself, by the same rule as a lease, is
    /// passed by for the next one, `locks/NAME.takeover.TOKEN.1`, and so on. Each is still won by
    /// exactly one host.
    func claim(_ there: Lease, of key: String, as mine: Lease) throws(CairnError) -> Lease? {
        let base = "\(key.dropLast(".lease".count)).takeover.\(there.token)"
        for attempt in 0..<Self.claimLimit {
            let claim = attempt == 0 ? base : "\(base).\(attempt)"
            do throws(CairnError) {
                try storage.publish(try mine.bytes(), as: claim, .createOnly)
                return nil
            } catch  where error.code == .exists {}
            guard let taker = try readLease(claim) else { continue }  // cannot be: claims stay
            guard taker.isStale else { return taker }  // another host is taking it over right now
        }
        throw CairnError(
            .busy,
            "\(storage.describe(key)) was claimed \(Self.claimLimit) times by takers that all died: remove \(base)* by hand"
        )
    }

    /// The lease under `key` if it is there and has not expired.
    func liveLease(_ key: String) throws(CairnError) -> Lease? {
        guard let lease = try readLease(key), !lease.isStale else { return nil }
        return lease
    }

    /// A group lease that has not expired, if any, with the group as its key names it (in an
    /// encrypted repository the catalog's keyed name, not the group's).
    func liveGroupLease() throws(CairnError) -> (String, Lease)? {
        for key in try storage.list(prefix: "locks/group.") where key.hasSuffix(".lease") {
            let group = String(key.dropFirst("locks/group.".count).dropLast(".lease".count))
            if let lease = try liveLease(key) { return (group, lease) }
        }
        return nil
    }

    /// The lease under `key`; a damaged one counts as expired (its holder cannot be named).
    func readLease(_ key: String) throws(CairnError) -> Lease? {
        try Lease.read(key, from: storage)
    }
}

/// One lease object's contents: who holds what until when (docs/FORMAT.md, "Lease objects").
public struct Lease: Codable, Sendable, Equatable {
    public var host: String
    public var pid: Int32
    public var purpose: String
    /// When it was taken (UTC, `2026-12-02T15:00:00Z`).
    public var created: String
    /// When it lapses unless renewed.
    public var expires: String
    /// Random, names this holding (a claim to take it over names it).
    public var token: String

    public init(host: String, pid: Int32, purpose: String, created: String, expires: String, token: String) {
        self.host = host
        self.pid = pid
        self.purpose = purpose
        self.created = created
        self.expires = expires
        self.token = token
    }

    static func new(purpose: String, lifetime: Int64) -> Lease {
        let now = Timestamp.now()
        return Lease(
            host: hostName, pid: getpid(), purpose: purpose, created: now.description,
            expires: Timestamp(seconds: now.seconds + lifetime).description, token: Hex.encode(SecureRandom.bytes(16)))
    }

    /// This host's name, as `hostname` prints it.
    static let hostName: String = {
        var name = [CChar](repeating: 0, count: 256)
        guard gethostname(&name, name.count - 1) == 0 else { return "unknown-host" }
        return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }()

    public var isExpired: Bool {
        guard let expiry = Timestamp(parsing: expires) else { return true }
        return expiry < Timestamp.now()
    }

    /// Whether the lease can be taken over: it expired, or its holder was a process of this very
    /// host that is gone (a backup killed by the OOM killer or `kill -9`), as restic judges a
    /// stale lock. So the next cron run on the same host does not wait out the lifetime; another
    /// host still does, as it cannot see this host's processes.
    public var isStale: Bool {
        isExpired || (host == Self.hostName && pid != getpid() && pid > 0 && !ProcessLiveness.isAlive(pid))
    }

    /// "cairn backup on host web3 (pid 4242, since 2026-12-02T15:00:00Z)".
    public var described: String { "\(purpose) on host \(host) (pid \(pid), since \(created))" }

    func bytes() throws(CairnError) -> [UInt8] { Array((try JSONCoding.encode(self) + "\n").utf8) }

    static func read(_ key: String, from storage: any RepositoryStorage) throws(CairnError) -> Lease? {
        guard let bytes = try storage.readIfPresent(key, limit: 64 << 10) else { return nil }
        if let lease = try? JSONCoding.decode(Lease.self, from: bytes, what: storage.describe(key)) { return lease }
        // Expired by its empty `expires`; its token names these bytes, so its claim is its own.
        return Lease(
            host: "unknown", pid: 0, purpose: "a damaged lease", created: "?", expires: "",
            token: "damaged-" + String(SHA256Hasher().digest(bytes).hex.prefix(32)))
    }
}

/// A `.shared` scope on leases: nothing to hold.
final class NoLease: HeldLock {
    func release() {}
    func tryUpgradeToExclusive() -> Bool { false }
    func check() throws(CairnError) {}
}

/// A lease this process holds: renewed from a background queue until released.
final class HeldLease: HeldLock, Sendable {
    let storage: any RepositoryStorage
    let key: String
    let lifetime: Int64
    /// The lease as last written; `lost` once another holder's token was found under the key.
    private let state: Mutex<(lease: Lease, lost: String?, released: Bool)>

    init(storage: any RepositoryStorage, key: String, lease: Lease, lifetime: Int64) {
        self.storage = storage
        self.key = key
        self.lifetime = lifetime
        state = Mutex((lease, nil, false))
    }

    func startRenewing() { scheduleRenewal() }

    private func scheduleRenewal() {
        let interval = Double(lifetime) / 3
        DispatchQueue.global().asyncAfter(deadline: .now() + interval) { [weak self] in
            guard let self, self.renew() else { return }
            self.scheduleRenewal()
        }
    }

    /// Writes the lease again with a later expiry, if it is still this process's; false to stop.
    func renew() -> Bool {
        let current = state.withLock { $0 }
        guard !current.released, current.lost == nil else { return false }
        do throws(CairnError) {
            let there = try Lease.read(key, from: storage)
            guard there?.token == current.lease.token else {
                let by = there.map { " by \($0.described)" } ?? ""
                state.withLock { $0.lost = "the lease \(storage.describe(key)) was taken over\(by)" }
                CairnLog.logger.error("lease lost: \(storage.describe(key))\(by)")
                return false
            }
            // Expired before it was renewed (this process stalled): a gc may have counted it
            // gone and deleted what it condemned, so this run must not commit.
            guard !current.lease.isExpired else {
                state.withLock { $0.lost = "the lease \(storage.describe(key)) expired at \(current.lease.expires)" }
                CairnLog.logger.error("lease lost: \(storage.describe(key)) expired at \(current.lease.expires)")
                return false
            }
            var renewed = current.lease
            renewed.expires = Timestamp(seconds: Timestamp.now().seconds + lifetime).description
            // Released meanwhile: do not write it back.
            guard !state.withLock({ $0.released }) else { return false }
            try storage.publish(try renewed.bytes(), as: key, .replace)
            state.withLock { $0.lease = renewed }
        } catch {
            // Try again at the next turn; the lease lives two more turns.
            CairnLog.logger.warning("lease \(storage.describe(key)) not renewed: \(error.message)")
        }
        return true
    }

    func release() {
        let current = state.withLock { state in
            defer { state.released = true }
            return state
        }
        guard !current.released, current.lost == nil else { return }
        // Deleted only while it is this process's: never a lease another host took over.
        if let there = try? Lease.read(key, from: storage), there.token == current.lease.token {
            try? storage.delete([key])
        }
    }

    func tryUpgradeToExclusive() -> Bool { false }

    func check() throws(CairnError) {
        let (lost, lease) = state.withLock { ($0.lost, $0.lease) }
        if let lost {
            throw CairnError(.busy, "\(lost): this run stalled past its expiry and commits nothing")
        }
        if lease.isExpired {
            throw CairnError(
                .busy,
                "the lease \(storage.describe(key)) expired at \(lease.expires) before it was renewed: this run stalled past its expiry and commits nothing"
            )
        }
    }
}
