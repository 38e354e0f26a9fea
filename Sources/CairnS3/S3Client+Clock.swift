public import CairnCore

#if canImport(Glibc)
    import Glibc
#endif

/// The clock check: a host whose clock is far from the store's is refused.
///
/// Leases (docs/FORMAT.md, "Object-store layout") compare `expires` with the reader's own
/// clock, so a host an hour fast would take over a live lease, and one an hour slow would keep
/// a dead host's lease alive. The store's `Date` header is the one clock every host shares: the
/// first reply a client receives is compared with the local clock, and a difference above
/// `Options.maxClockSkew` fails that request (and so the command) naming both times.
extension S3Client {
    /// The error for a reply whose `Date` is more than `limit` seconds from `local`, or nil
    /// when it is close enough or has no readable `Date` (then nothing is known to be wrong).
    static func clockSkewError(date header: String?, local: Int64, limit: Int64, endpoint: S3Endpoint) -> CairnError? {
        guard let header, let store = parseHTTPDate(header) else { return nil }
        let skew = local - store
        guard abs(skew) > limit else { return nil }
        let ahead = skew > 0 ? "ahead of" : "behind"
        return CairnError(
            .repository,
            "this host's clock is \(abs(skew)) s \(ahead) the S3 store's "
                + "(here \(Timestamp(seconds: local)), \(endpoint) says \(Timestamp(seconds: store))), more than the "
                + "\(limit) s leases allow: set the clock right (NTP) and run again")
    }

    /// Seconds since 1970 of an HTTP date in its preferred form, `Wed, 02 Dec 2026 15:48:26 GMT`
    /// (RFC 9110 §5.6.7, what S3 stores send); nil for anything else.
    static func parseHTTPDate(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[0].hasSuffix(","), parts[5] == "GMT",
            let day = Int32(parts[1]), (1...31).contains(day),
            let month = Self.months.firstIndex(of: String(parts[2])),
            let year = Int32(parts[3]), year >= 1970
        else { return nil }
        let clock = parts[4].split(separator: ":")
        guard clock.count == 3, let hour = Int32(clock[0]), let minute = Int32(clock[1]),
            let second = Int32(clock[2]), (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second)
        else { return nil }
        var fields = tm()
        fields.tm_year = year - 1900
        fields.tm_mon = Int32(month)
        fields.tm_mday = day
        fields.tm_hour = hour
        fields.tm_min = minute
        fields.tm_sec = second
        return Int64(timegm(&fields))
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
}
