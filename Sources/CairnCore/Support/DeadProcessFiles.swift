import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Temporary files that carry the id of the process writing them, removed by a later run once
/// that process is provably gone.
///
/// A `kill -9`, a power cut or a second Ctrl-C gives a process no chance to remove its scratch
/// files (archive restore's `.cairn-restore-PID-…`, the digest runs `.cairn-digests-PID-…`, an
/// archive volume being written `.NAME.001.tmp-PID`). The next run of the same kind sweeps the
/// directory it is about to use: a file is removed only when no process with its PID runs (a
/// reused PID keeps the file, which is the safe mistake).
enum DeadProcessFiles {
    /// Removes the files in `directory` for which `owner` names a PID that no longer runs;
    /// returns how many. Unreadable directories and failed removals are ignored: sweeping is
    /// housekeeping and never fails a command.
    @discardableResult
    static func sweep(_ directory: String, owner: (String) -> Int32?) -> Int {
        var removed = 0
        for name in (try? FileSystem.list(directory)) ?? [] {
            guard let pid = owner(name), pid > 0, pid != getpid(), !ProcessLiveness.isAlive(pid) else { continue }
            if (try? FileSystem.remove("\(directory)/\(name)")) != nil { removed += 1 }
        }
        return removed
    }

    /// The PID of `PREFIX<pid>-…` (scratch files), or nil when `name` has another form.
    static func pid(in name: String, after prefix: String) -> Int32? {
        guard name.hasPrefix(prefix) else { return nil }
        let digits = name.dropFirst(prefix.count).prefix { $0 >= "0" && $0 <= "9" }
        guard !digits.isEmpty, digits.count <= 10 else { return nil }
        return Int32(digits)
    }

    /// The PID of `.NAME.tmp-<pid>` (`FileSystem.temporaryName`) when NAME starts with `base`.
    static func pid(inTemporaryNameOf base: String, _ name: String) -> Int32? {
        guard name.hasPrefix(".\(base)"), let range = name.range(of: ".tmp-", options: .backwards) else { return nil }
        let digits = name[range.upperBound...]
        guard !digits.isEmpty, digits.count <= 10, digits.allSatisfy({ $0 >= "0" && $0 <= "9" }) else { return nil }
        return Int32(digits)
    }
}
