#if canImport(Glibc)
    import Glibc
#endif

/// What a command locks (docs/ARCHITECTURE.md and docs/INTEGRITY.md, "Locks").
///
/// The lock files and their meaning are part of the repository's contract with every Cairn
/// running beside this one: `locks/repository.lock` is taken shared by everything that reads or
/// adds (backup, restore, verify, prune, serve, archive), exclusively by what deletes or rewrites
/// the index (gc, repair, rebuild-index); `locks/group.NAME.lock` exclusively by whatever changes
/// that group's restore points (backup, prune, forget, protect, unprotect, import).
public enum LockScope: Sendable, Equatable {
    /// The repository, shared: others may read and add, no one may delete.
    case shared
    /// The repository alone.
    case exclusive
    /// One group's restore points: the group's lock exclusively, and the repository's shared.
    case group(String)
    /// gc on storage it can share with backups (`RepositoryLocking.collectsBesideBackups`):
    /// one gc at a time, beside backups and readers. Elsewhere the same as `.exclusive`.
    case collector
}

/// How a storage's commands keep out of each other's way: the one seam behind
/// `Repository.lock(_:purpose:wait:)`, chosen by the storage (`RepositoryStorage.makeLocking()`).
///
/// A local directory takes flocks (`FileLocking`); storage shared by several hosts takes leases
/// that expire (`LeaseLocking`), since no kernel there releases the lock of a dead host.
public protocol RepositoryLocking: Sendable {
    /// Takes what `scope` needs, waiting up to `wait` seconds (nil: fail at once, naming the
    /// holder); `purpose` ("cairn backup") is what other processes are told. `groupFileName` is
    /// how a group is named in the lock's key (the catalog's: hidden in an encrypted repository).
    func acquire(
        _ scope: LockScope, purpose: String, wait: Double?, onWait: LockWaitObserver?,
        groupFileName: (String) -> String
    ) throws(CairnError) -> RepositoryLock

    /// Whether gc runs beside backups here (`.collector` is not `.exclusive`), so that it must
    /// condemn first and delete on a later run (`CondemnedList`).
    var collectsBesideBackups: Bool { get }

    /// The holders of group locks taken before `time` (their holders' clocks) that may still
    /// be running, as "cairn backup on host hv3 (pid 4242, since ...)": a later gc deletes
    /// nothing a list of `time` condemns while any is. Counted live until `margin` seconds after
    /// their expiry, as clocks of hosts may differ by that much.
    func groupHoldersStarted(before time: Timestamp, margin: Int64) throws(CairnError) -> [String]
}

extension RepositoryLocking {
    /// For scopes that name no group, or a repository whose group names are plain.
    public func acquire(
        _ scope: LockScope, purpose: String, wait: Double?, onWait: LockWaitObserver?
    ) throws(CairnError) -> RepositoryLock {
        try acquire(scope, purpose: purpose, wait: wait, onWait: onWait, groupFileName: { $0 })
    }
}

/// What a `RepositoryLocking` holds until it is released.
protocol HeldLock: AnyObject {
    /// Gives the lock up (an flock's file closed, a lease deleted).
    func release()
    /// See `RepositoryLock.tryUpgradeToExclusive()`.
    func tryUpgradeToExclusive() -> Bool
    /// Throws if the lock was lost since it was taken (a lease another host took over).
    func check() throws(CairnError)
}

/// Held locks on a repository; released when dropped (and flocks when the process dies).
///
/// Taken only through `Repository.lock(_:purpose:wait:)`, which alone knows what `scope` means on
/// its storage.
public final class RepositoryLock {
    let held: any HeldLock

    init(held: any HeldLock) { self.held = held }

    deinit { held.release() }

    /// Tries to turn the shared repository lock into an exclusive one without waiting.
    ///
    /// flock converts by dropping the old lock first, so on failure the caller may hold nothing:
    /// use it only where losing the lock is harmless (at the end of a run). Leases never upgrade
    /// (there is no repository-wide lease to upgrade).
    public func tryUpgradeToExclusive() -> Bool { held.tryUpgradeToExclusive() }

    /// Throws `.busy` if the lock is no longer this process's: checked before a commit, so a run
    /// whose lease was taken over (it stalled past its expiry) commits nothing.
    public func check() throws(CairnError) { try held.check() }
}

/// flocks on a local repository's lock files (docs/INTEGRITY.md, "Locks").
///
/// The kernel releases an flock with its process, so a crashed cron run can never leave a stale
/// lock behind.
struct FileLocking: RepositoryLocking {
    let root: String

    func acquire(
        _ scope: LockScope, purpose: String, wait: Double?, onWait: LockWaitObserver?,
        groupFileName: (String) -> String
    ) throws(CairnError) -> RepositoryLock {
        RepositoryLock(
            held: try FileLocks.acquire(
                root: root, scope: scope, purpose: purpose, wait: wait, onWait: onWait, groupFileName: groupFileName))
    }

    /// One kernel's flocks: gc takes the repository alone and deletes at once.
    var collectsBesideBackups: Bool { false }

    /// None while gc holds the repository's lock exclusively.
    func groupHoldersStarted(before time: Timestamp, margin: Int64) throws(CairnError) -> [String] { [] }
}

/// The flocks held for one scope.
final class FileLocks: HeldLock {
    /// The repository lock first, then the group's: always in that order, so two commands never
    /// wait for each other.
    private let files: [File]

    private init(files: [File]) { self.files = files }

    func release() { for file in files.reversed() { file.unlock() } }

    func tryUpgradeToExclusive() -> Bool {
        guard let file = files.first else { return false }
        return (try? file.tryLock(.exclusive)) ?? false
    }

    func check() throws(CairnError) {}

    /// Takes the lock files of `scope` under `root`, waiting up to `wait` seconds each (nil: fail at once).
    static func acquire(
        root: String, scope: LockScope, purpose: String, wait: Double?, onWait: LockWaitObserver?,
        groupFileName: (String) -> String = { $0 }
    ) throws(CairnError) -> FileLocks {
        let repositoryFile = "\(root)/locks/repository.lock"
        switch scope {
        case .shared:
            let file = try take(
                repositoryFile, .shared, what: "repository \(root)", purpose: purpose, wait: wait, onWait: onWait)
            return FileLocks(files: [file])
        case .exclusive, .collector:
            let file = try take(
                repositoryFile, .exclusive, what: "repository \(root)", purpose: purpose, wait: wait, onWait: onWait)
            return FileLocks(files: [file])
        case .group(let group):
            precondition(GroupName.isValid(group), "a group lock for an unchecked group name")
            let shared = try take(
                repositoryFile, .shared, what: "repository \(root)", purpose: purpose, wait: wait, onWait: onWait)
            // The note leaves the group out: the file's name carries it (in an encrypted
            // repository, as the catalog hides it: `groupFileName`), and an encrypted
            // repository's files hold no group name in their bytes.
            let exclusive = try take(
                "\(root)/locks/group.\(groupFileName(group)).lock", .exclusive, what: "group \(group)",
                purpose: purpose, wait: wait,
                onWait: onWait)
            return FileLocks(files: [shared, exclusive])
        }
    }

    /// Takes the flock on `path`. `what` names the resource in messages ("group vm1"); an
    /// exclusive holder writes `purpose` into the file for others to read.
    private static func take(
        _ path: String, _ kind: File.LockKind, what: String, purpose: String, wait: Double?,
        onWait: LockWaitObserver?
    ) throws(CairnError) -> File {
        let file: File
        if let existing = try? File.open(path, .readWrite) {
            file = existing
        } else if let created = try? File.open(path, .createNew) {
            file = created
        } else if kind == .shared, let readOnly = try? File.open(path, .readOnly) {
            // A read-only repository (a mounted snapshot, an offsite copy) can still be restored from.
            file = readOnly
        } else {
            file = try File.open(path, .readWrite)
        }
        let deadline = Stopwatch()
        var announced = false
        while true {
            if try file.tryLock(kind) {
                if kind == .exclusive {
                    let note = "\(purpose) (pid \(getpid()), started \(Timestamp.now()))\n"
                    try? file.truncate(to: 0)
                    try? file.write(Array(note.utf8), at: 0)
                }
                CairnLog.logger.info(
                    "lock taken: \(what), \(kind == .shared ? "shared" : "exclusive"), after \(Units.formatDecimal(deadline.elapsed, places: 1)) s"
                )
                return file
            }
            guard let wait, deadline.elapsed < wait else {
                let holder = LockHolder.describe(file)
                let waited = wait.map { " after waiting \(Units.formatDecimal($0, places: 0)) s" } ?? ""
                throw CairnError(.busy, "\(what) is locked by \(holder)\(waited)", remedy: .waitForLock)
            }
            if !announced, let onWait {
                announced = true
                onWait("waiting for the lock held by \(LockHolder.describe(file)) on \(what)")
            }
            try Cancellation.check("nothing done (while waiting for \(what))")
            usleep(100_000)
        }
    }
}

/// Told once, in words, when a command starts waiting for a lock another process holds.
public typealias LockWaitObserver = @Sendable (String) -> Void

/// Who holds an flock on a lock file, in words: "PID 4242 (cairn gc, since 2026-11-26T03:00:00Z)".
///
/// The kernel knows every holder (`/proc/locks` lists each flock with its process and the file's
/// inode), so shared holders, which write nothing, are named too. An exclusive holder also wrote
/// its purpose into the file: that note is trusted only while the file is held exclusively (a
/// note survives its writer).
enum LockHolder {
    static func describe(_ file: File) -> String {
        let holders = kernelHolders(of: file)
        let note = String(decoding: (try? file.readBytes(count: 512, at: 0)) ?? [], as: UTF8.self).trimmingSpaces
        if holders.isEmpty || holders.contains(where: \.exclusive), let parsed = parse(note: note) {
            return parsed
        }
        guard !holders.isEmpty else { return "another cairn process" }
        let shown = holders.prefix(3).map { "PID \($0.pid) (\(command(of: $0.pid)))" }
        let more = holders.count > 3 ? " and \(holders.count - 3) more" : ""
        return shown.joined(separator: ", ") + more
    }

    /// `PURPOSE (pid N, started TIME)` as written by `RepositoryLock`, as `PID N (PURPOSE, since TIME)`.
    static func parse(note: String) -> String? {
        guard !note.isEmpty else { return nil }
        guard let open = note.range(of: " (pid ", options: .backwards), note.hasSuffix(")") else { return note }
        let purpose = note[..<open.lowerBound]
        let inside = note[open.upperBound..<note.index(before: note.endIndex)]
        let parts = inside.components(separatedBy: ", started ")
        guard parts.count == 2, Int32(parts[0]) != nil else { return note }
        return "PID \(parts[0]) (\(purpose), since \(parts[1]))"
    }

    struct Holder: Equatable {
        var pid: Int32
        var exclusive: Bool
    }

    /// The processes /proc/locks names as holding an flock on `file` (none if it cannot be read).
    static func kernelHolders(of file: File) -> [Holder] {
        var st = stat()
        guard fstat(file.descriptor.rawValue, &st) == 0 else { return [] }
        let device = UInt64(st.st_dev)
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)
        let minor = (device & 0xff) | ((device >> 12) & ~0xff)
        let key =
            "\(String(major, radix: 16, uppercase: false).leftPadded(2)):"
            + "\(String(minor, radix: 16, uppercase: false).leftPadded(2)):\(st.st_ino)"
        guard let bytes = try? File.open("/proc/locks", .readOnly).readBytes(count: 1 << 20, at: 0) else { return [] }
        var holders: [Holder] = []
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            // "3: FLOCK  ADVISORY  WRITE 15872 fe:00:16221282 0 EOF"; waiters have "->" after the number.
            let fields = line.split(separator: " ")
            guard fields.count >= 6, fields[1] == "FLOCK", fields[5] == key, let pid = Int32(fields[4]),
                pid != getpid()
            else { continue }
            let holder = Holder(pid: pid, exclusive: fields[3] == "WRITE")
            if !holders.contains(holder) { holders.append(holder) }
        }
        return holders
    }

    /// A process's command line, shortened, from /proc (or "a process that has ended").
    static func command(of pid: Int32) -> String {
        guard let bytes = try? File.open("/proc/\(pid)/cmdline", .readOnly).readBytes(count: 4096, at: 0),
            !bytes.isEmpty
        else {
            return "a process that has ended"
        }
        let words = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        var shown = words.enumerated().map { $0.offset == 0 ? FileSystem.baseName($0.element) : $0.element }
            .joined(separator: " ")
        if shown.count > 80 { shown = String(shown.prefix(77)) + "..." }
        return shown
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
