#if canImport(Glibc)
    import Glibc
#endif

/// A restore point's name: `GROUP@TIME`, TIME in UTC as `2026-11-26T03:00:00Z`.
///
/// Ids are to the second and a group's ids are distinct and ordered by the moment each backup
/// started, so never later than the moment its restore point was committed (see `next(in:after:)`).
public struct RestorePointID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var group: String
    public var time: Timestamp

    public init(group: String, time: Timestamp) {
        self.group = group
        self.time = time
    }

    /// Parses `GROUP@TIME` (TIME exactly as printed, or any form `Timestamp(parsing:)` takes).
    public init?(parsing text: String) {
        guard let at = text.lastIndex(of: "@") else { return nil }
        let group = String(text[..<at])
        guard GroupName.isValid(group), let time = Timestamp(parsing: String(text[text.index(after: at)...])) else {
            return nil
        }
        self.init(group: group, time: time)
    }

    public var description: String { "\(group)@\(time)" }

    /// The id of a new restore point of `group` whose newest one is `previous`: now, to the second.
    ///
    /// When `previous` holds this second already (back-to-back backups), this waits for the next
    /// second rather than naming a time that has not come yet: an id in the future would let
    /// `restore --at NOW` pick an older restore point. Whole seconds keep the id format (a
    /// contract, and the manifests' file names) exactly as it was, and cost at most a second
    /// between backups of one group. A previous id more than `maxWait` seconds ahead of the
    /// clock (the clock was set back) is refused: waiting would stall, and an earlier id would sort
    /// before it.
    static func next(
        in group: String, after previous: RestorePointID?, maxWait: Double = 10
    ) throws(CairnError) -> RestorePointID {
        let waited = Stopwatch()
        while true {
            let now = Timestamp.now()
            guard let previous, previous.time >= now else { return RestorePointID(group: group, time: now) }
            let ahead = previous.time.seconds - now.seconds
            guard Double(ahead) + waited.elapsed <= maxWait else {
                throw CairnError(
                    .io,
                    "this machine's clock (\(now)) is \(ahead) s behind the newest restore point \(previous): correct the clock, so that restore point ids stay in order"
                )
            }
            try Cancellation.check()
            usleep(20_000)
        }
    }

    public static func < (a: RestorePointID, b: RestorePointID) -> Bool {
        (a.time, a.group) < (b.time, b.group)
    }
}

/// Rules for group names: they become directory and lock file names.
public enum GroupName {
    public static func isValid(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 128, name.first != ".", name.first != "-" else { return false }
        return name.unicodeScalars.allSatisfy { c in
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "-" || c == "_"
                || c == "."
        }
    }

    public static func validate(_ name: String) throws(CairnError) {
        guard isValid(name) else {
            throw CairnError(
                .usage,
                "group name \"\(name)\" is not valid: use letters, digits, '.', '_' and '-' (not first), at most 128")
        }
    }
}
