/// A restore point's name: `GROUP@TIME`, TIME in UTC as `2026-11-26T03:00:00Z`.
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
