#if canImport(Glibc)
    import Glibc
#endif

/// A moment in UTC, to the second: restore point ids and every time Cairn prints or stores.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Seconds since 1970-01-01T00:00:00Z.
    public var seconds: Int64

    public init(seconds: Int64) { self.seconds = seconds }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec))
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.seconds < b.seconds }

    /// `2026-11-26T03:00:00Z`.
    public var description: String {
        let c = components
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return
            "\(pad(c.year, 4))-\(pad(c.month, 2))-\(pad(c.day, 2))T\(pad(c.hour, 2)):\(pad(c.minute, 2)):\(pad(c.second, 2))Z"
    }

    public struct Components: Sendable {
        public var year, month, day, hour, minute, second: Int64
        /// 0 = Monday ... 6 = Sunday (ISO).
        public var weekday: Int64
    }

    public var components: Components {
        let days = Self.floorDiv(seconds, 86400)
        let secs = seconds - days * 86400
        // Howard Hinnant's civil_from_days.
        let z = days + 719468
        let era = Self.floorDiv(z, 146097)
        let doe = z - era * 146097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
        let weekday = (Self.floorDiv(days, 1) + 3) % 7  // 1970-01-01 was a Thursday (3)
        return Components(
            year: y, month: m, day: d, hour: secs / 3600, minute: secs % 3600 / 60, second: secs % 60,
            weekday: weekday < 0 ? weekday + 7 : weekday)
    }

    public init(year: Int64, month: Int64, day: Int64, hour: Int64 = 0, minute: Int64 = 0, second: Int64 = 0) {
        // days_from_civil
        let y = month <= 2 ? year - 1 : year
        let era = Self.floorDiv(y, 400)
        let yoe = y - era * 400
        let mp = month > 2 ? month - 3 : month + 9
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146097 + doe - 719468
        seconds = days * 86400 + hour * 3600 + minute * 60 + second
    }

    /// Parses `2026-11-26T03:00:00Z`, and the forms people type: `2026-11-26T03:00`,
    /// `2026-11-26 03:00:00`, `2026-11-26` (midnight). All UTC.
    public init?(parsing text: String) {
        var s = Array(text.trimmingSpaces.utf8)
        if s.last == UInt8(ascii: "Z") { s.removeLast() }
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= s.count else { return nil }
            var v: Int64 = 0
            for c in s[range] {
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
            }
            return v
        }
        guard s.count >= 10, s[4] == UInt8(ascii: "-"), s[7] == UInt8(ascii: "-"),
            let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        var hour: Int64 = 0
        var minute: Int64 = 0
        var second: Int64 = 0
        if s.count > 10 {
            guard s[10] == UInt8(ascii: "T") || s[10] == UInt8(ascii: " "), s.count >= 16, s[13] == UInt8(ascii: ":"),
                let h = number(11..<13), let mi = number(14..<16), h < 24, mi < 60
            else { return nil }
            hour = h
            minute = mi
            if s.count > 16 {
                guard s.count == 19, s[16] == UInt8(ascii: ":"), let se = number(17..<19), se < 61 else { return nil }
                second = se
            }
        }
        self.init(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}

/// A monotonic stopwatch for the seconds reported in summaries.
public struct Stopwatch: Sendable {
    private let start: Double

    public init() { start = Stopwatch.monotonic() }

    public var elapsed: Double { Stopwatch.monotonic() - start }

    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
