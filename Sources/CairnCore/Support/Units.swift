/// Parses and prints the sizes and durations administrators type: `64K`, `4MiB`, `30s`, `2h`.
public enum Units {
    /// `4096`, `64K`, `64k`, `64KiB`, `1M`, `2G`, `1T` (binary multiples).
    public static func parseSize(_ text: String) -> UInt64? {
        var digits = Substring(text.trimmingSpaces)
        var multiplier: UInt64 = 1
        let suffixes: [(String, UInt64)] = [
            ("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("TIB", 1 << 40),
            ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("TB", 1 << 40),
            ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40), ("B", 1),
        ]
        let upper = digits.uppercased()
        for (suffix, value) in suffixes where upper.hasSuffix(suffix) {
            multiplier = value
            digits = digits.dropLast(suffix.count)
            break
        }
        guard let n = UInt64(digits) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// `90`, `90s`, `5m`, `2h`, `7d`, `2w` as seconds.
    public static func parseDuration(_ text: String) -> Double? {
        let t = text.trimmingSpaces
        guard let last = t.last else { return nil }
        let scale: Double
        var number = Substring(t)
        switch last {
        case "s": scale = 1
        case "m": scale = 60
        case "h": scale = 3600
        case "d": scale = 86400
        case "w": scale = 7 * 86400
        case "y": scale = 365 * 86400
        default:
            scale = 1
            number = Substring(t) + ""
        }
        if !last.isNumber { number = number.dropLast() }
        guard let value = Double(number), value >= 0 else { return nil }
        return value * scale
    }

    /// `1.5 GiB` style, for humans.
    public static func formatBytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
        var value = Double(n)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        if unit == 0 { return "\(n) B" }
        return "\(formatDecimal(value, places: value < 10 ? 2 : 1)) \(units[unit])"
    }

    public static func formatDecimal(_ value: Double, places: Int) -> String {
        if places <= 0 { return String(Int64(value.rounded())) }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        var text = "\(rounded)"
        if let dot = text.firstIndex(of: ".") {
            let decimals = text.distance(from: dot, to: text.endIndex) - 1
            if decimals < places { text += String(repeating: "0", count: places - decimals) }
        } else if places > 0 {
            text += "." + String(repeating: "0", count: places)
        }
        return text
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first?.isWhitespace == true { s = s.dropFirst() }
        while s.last?.isWhitespace == true { s = s.dropLast() }
        return String(s)
    }
}
