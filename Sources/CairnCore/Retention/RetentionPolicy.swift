/// Which restore points of a group to keep: `--keep-last`, `--keep-hourly` … `--keep-yearly`,
/// `--keep-within` (docs/INTEGRITY.md, "Retention").
///
/// Semantics are Proxmox Backup Server's: the rules run in a fixed order (within, last, hourly,
/// daily, weekly, monthly, yearly) and each counts only periods that no earlier rule already
/// covered, so the counts add up: `--keep-daily 7 --keep-weekly 4` keeps 7 daily restore points
/// and 4 weekly ones *before* them, reaching back about five weeks. (restic lets rules overlap:
/// the same policy there keeps only about four weeks.) Adding up makes "how far back does my
/// history reach" answerable from the counts alone. Protected restore points are always kept
/// and do not use up any rule's count. Periods are calendar periods in UTC; weeks start on Monday.
public struct RetentionPolicy: Sendable, Equatable {
    public var keepLast = 0
    public var keepHourly = 0
    public var keepDaily = 0
    public var keepWeekly = 0
    public var keepMonthly = 0
    public var keepYearly = 0
    /// Keep every restore point this many seconds or less older than the group's newest.
    public var keepWithin: Double?

    public init() {}

    /// True when no rule keeps anything: pruning with it would remove every restore point.
    public var isEmpty: Bool {
        keepLast == 0 && keepHourly == 0 && keepDaily == 0 && keepWeekly == 0 && keepMonthly == 0 && keepYearly == 0
            && keepWithin == nil
    }

    /// The decision for one restore point and the rule that made it.
    public struct Decision: Sendable, Equatable, Codable {
        public var id: RestorePointID
        public var keep: Bool
        /// `protected`, `keep-within 7d`, `keep-last`, `keep-daily 2026-11-26`, or `no rule keeps it`.
        public var reason: String
    }

    public enum Period: String, CaseIterable, Sendable {
        case hourly, daily, weekly, monthly, yearly

        /// A label naming the period `time` falls in; equal labels mean the same period.
        public func label(of time: Timestamp) -> String {
            let c = time.components
            func pad(_ v: Int64, _ w: Int = 2) -> String {
                let s = String(v)
                return String(repeating: "0", count: max(0, w - s.count)) + s
            }
            switch self {
            case .hourly: return "\(pad(c.year, 4))-\(pad(c.month))-\(pad(c.day))T\(pad(c.hour))"
            case .daily: return "\(pad(c.year, 4))-\(pad(c.month))-\(pad(c.day))"
            case .weekly:
                let monday = Timestamp(
                    seconds: time.seconds - c.weekday * 86400
                        - (time.seconds - Timestamp.floorDiv(time.seconds, 86400) * 86400))
                return "week of \(Period.daily.label(of: monday))"
            case .monthly: return "\(pad(c.year, 4))-\(pad(c.month))"
            case .yearly: return "\(pad(c.year, 4))"
            }
        }
    }

    private func count(_ period: Period) -> Int {
        switch period {
        case .hourly: return keepHourly
        case .daily: return keepDaily
        case .weekly: return keepWeekly
        case .monthly: return keepMonthly
        case .yearly: return keepYearly
        }
    }

    /// Decides for every restore point of one group. `points` may come in any order; the
    /// decisions come newest first.
    public func apply(to points: [RestorePointID], protected: Set<RestorePointID>) -> [Decision] {
        let list = points.sorted { $0.time > $1.time }
        var reason: [RestorePointID: (keep: Bool, why: String)] = [:]
        for id in list where protected.contains(id) { reason[id] = (true, "protected") }

        if let within = keepWithin, let newest = list.first {
            for id in list where reason[id] == nil && Double(newest.time.seconds - id.time.seconds) <= within {
                reason[id] = (true, "keep-within \(Self.formatDuration(within))")
            }
        }
        var kept = 0
        for id in list where reason[id] == nil && kept < keepLast {
            reason[id] = (true, "keep-last \(keepLast)")
            kept += 1
        }
        for period in Period.allCases where count(period) > 0 {
            // Periods an earlier rule already covers do not count (PBS semantics).
            var covered = Set<String>()
            for id in list where reason[id]?.keep == true { covered.insert(period.label(of: id.time)) }
            var chosen = Set<String>()
            for id in list where reason[id] == nil {
                let label = period.label(of: id.time)
                if covered.contains(label) { continue }
                if chosen.contains(label) {
                    reason[id] = (false, "a newer restore point already stands for \(period.rawValue) period \(label)")
                    continue
                }
                if chosen.count >= count(period) { break }
                chosen.insert(label)
                reason[id] = (true, "keep-\(period.rawValue) \(label)")
            }
        }
        return list.map { id in
            let r = reason[id] ?? (false, "no rule keeps it")
            return Decision(id: id, keep: r.keep, reason: r.why)
        }
    }

    static func formatDuration(_ seconds: Double) -> String {
        let s = Int(seconds)
        if s % 86400 == 0 { return "\(s / 86400)d" }
        if s % 3600 == 0 { return "\(s / 3600)h" }
        if s % 60 == 0 { return "\(s / 60)m" }
        return "\(s)s"
    }
}
