#if canImport(Glibc)
    import Glibc
#endif

/// A held flock on one of the repository's lock files; released when dropped or when the process dies.
///
/// Locks (docs/ARCHITECTURE.md, "Locks"): `locks/repository.lock` is taken shared by backups and
/// restores and exclusively by commands that delete (gc); `locks/group.NAME.lock` exclusively by a
/// backup of that group. The kernel releases an flock with its process, so a crashed cron run
/// can never leave a stale lock behind.
public final class RepositoryLock {
    private let file: File

    private init(file: File) { self.file = file }

    deinit { file.unlock() }

    /// Takes the lock at `path`, waiting up to `wait` seconds (nil: fail at once).
    /// `what` names the resource in messages ("group vm1"); `purpose` is written for others to read.
    public static func acquire(
        path: String, kind: File.LockKind, wait: Double?, what: String, purpose: String
    ) throws(CairnError) -> RepositoryLock {
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
                return RepositoryLock(file: file)
            }
            guard let wait, deadline.elapsed < wait else {
                let holder = holderDescription(file)
                let waited = wait.map { " after waiting \(Units.formatDecimal($0, places: 0)) s" } ?? ""
                throw CairnError(
                    .busy,
                    "\(what) is locked by \(holder)\(waited); wait for it to finish or pass --lock-wait DURATION")
            }
            try Cancellation.check("nothing done (while waiting for \(what))")
            usleep(100_000)
        }
    }

    /// Tries to turn a shared lock into an exclusive one without waiting.
    ///
    /// flock converts by dropping the old lock first, so on failure the caller may hold nothing:
    /// use it only where losing the lock is harmless (at the end of a run).
    public func tryUpgradeToExclusive() -> Bool {
        (try? file.tryLock(.exclusive)) ?? false
    }

    private static func holderDescription(_ file: File) -> String {
        let bytes = (try? file.readBytes(count: 512, at: 0)) ?? []
        let text = String(decoding: bytes, as: UTF8.self).trimmingSpaces
        return text.isEmpty ? "another cairn process" : text
    }
}
