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

    /// How to read a time written without a zone.
    public enum ZonelessTime: Sendable {
        /// As UTC: restore point ids, which are always UTC.
        case utc
        /// As local time, per `TZ` (what a person means by `--at 14:00`).
        case local
    }

    /// Parses `2026-11-26T03:00:00Z`, and the forms people type: `2026-11-26T03:00`,
    /// `2026-11-26 03:00:00`, `2026-11-26` (midnight), fractional seconds (`03:00:00.250`, cut to
    /// the second: restore points are named to the second) and a zone (`Z`, `+01:00`, `+0100`,
    /// `-05`). A time without a zone is UTC or local time, as `zoneless` says.
    public init?(parsing text: String, zoneless: ZonelessTime = .utc) {
        var s = Array(text.trimmingSpaces.utf8)
        // The zone: Z, or +HH[:MM] / -HH[:MM] after the time of day.
        var offset: Int64? = nil
        if s.last == UInt8(ascii: "Z") || s.last == UInt8(ascii: "z") {
            s.removeLast()
            offset = 0
        } else if s.count > 16,
            let sign = s[16...].lastIndex(where: { $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") })
        {
            let zone = Array(s[(sign + 1)...])
            let digits = zone.filter { $0 != UInt8(ascii: ":") }
            guard zone.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: ":") }),
                digits.count == 2 || digits.count == 4,
                zone.count == digits.count || (zone.count == 5 && zone[2] == UInt8(ascii: ":"))
            else { return nil }
            let hours = Int64(digits[0] - 48) * 10 + Int64(digits[1] - 48)
            let minutes = digits.count == 4 ? Int64(digits[2] - 48) * 10 + Int64(digits[3] - 48) : 0
            guard hours <= 23, minutes <= 59 else { return nil }
            let sign: Int64 = s[sign] == UInt8(ascii: "-") ? -1 : 1
            offset = sign * (hours * 3600 + minutes * 60)
            s.removeLast(zone.count + 1)
        }
        // Fractional seconds, cut off.
        if s.count > 19, s[19] == UInt8(ascii: ".") || s[19] == UInt8(ascii: ",") {
            guard s.count > 20, s[20...].allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            s.removeLast(s.count - 19)
        }
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
            guard s[10] == UInt8(ascii: "T") || s[10] == UInt8(ascii: "t") || s[10] == UInt8(ascii: " "),
                s.count >= 16, s[13] == UInt8(ascii: ":"),
                let h = number(11..<13), let mi = number(14..<16), h < 24, mi < 60
            else { return nil }
            hour = h
            minute = mi
            if s.count > 16 {
                guard s.count == 19, s[16] == UInt8(ascii: ":"), let se = number(17..<19), se < 61 else { return nil }
                second = se
            }
        }
        if let offset {
            self.init(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
            seconds -= offset
        } else if zoneless == .local {
            guard
                let local = Self.fromLocal(
                    year: year, month: month, day: day, hour: hour, minute: minute, second: second)
            else { return nil }
            self = local
        } else {
            self.init(year: year, month: month, day: day, hour: hour, minute: minute, second: second)
        }
    }

    /// A wall-clock time in the local zone (`TZ`), through the C library's zone rules.
    ///
    /// A time that a daylight-saving change skips or repeats is resolved as mktime(3) resolves it.
    static func fromLocal(year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64)
        -> Timestamp?
    {
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        parts.tm_isdst = -1
        tzset()
        let result = mktime(&parts)
        guard result != -1 else { return nil }
        return Timestamp(seconds: Int64(result))
    }

    /// The offset of local time (`TZ`) from UTC at this moment, in seconds east.
    public var localOffset: Int64 {
        var time = time_t(seconds)
        var parts = tm()
        tzset()
        guard localtime_r(&time, &parts) != nil else { return 0 }
        return Int64(parts.tm_gmtoff)
    }

    /// `2026-12-01T15:33:50+01:00`: this moment in local time (`TZ`), with its offset, for
    /// people at a terminal. Ids, files and `--json` always use `description` (UTC).
    public var localDescription: String {
        let offset = localOffset
        // UTC (no TZ, TZ=UTC, or a zone at offset 0 just now) reads as the id does, with Z.
        guard offset != 0 else { return description }
        let c = Timestamp(seconds: seconds + offset).components
        func pad(_ v: Int64, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        let sign = offset < 0 ? "-" : "+"
        let magnitude = abs(offset)
        return "\(pad(c.year, 4))-\(pad(c.month, 2))-\(pad(c.day, 2))T\(pad(c.hour, 2)):\(pad(c.minute, 2)):"
            + "\(pad(c.second, 2))\(sign)\(pad(magnitude / 3600, 2)):\(pad(magnitude % 3600 / 60, 2))"
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
