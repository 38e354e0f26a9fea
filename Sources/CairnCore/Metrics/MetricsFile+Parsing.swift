extension MetricsFile {
    /// Reads back a file this type wrote: every `cairn_NAME{command=…,group=…,repository=…} VALUE`
    /// sample of a known metric. Comments, other metrics and lines that do not parse are dropped
    /// (they are rewritten from the series, or were not Cairn's).
    public init(parsing text: String) {
        let known = Set(Self.metrics.map(\.name))
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let (name, key, value) = Self.parseSample(Substring(line)), known.contains(name) else { continue }
            series[key, default: [:]][name] = value
        }
    }

    /// One sample line, or nil if it is not one of ours.
    static func parseSample(_ line: Substring) -> (String, RunMetrics.Key, Double)? {
        guard line.hasPrefix(prefix), let brace = line.firstIndex(of: "{") else { return nil }
        let name = String(line[line.index(line.startIndex, offsetBy: prefix.count)..<brace])
        var labels: [String: String] = [:]
        var i = line.index(after: brace)
        // label="value" pairs separated by commas, up to the closing brace.
        while i < line.endIndex, line[i] != "}" {
            guard let eq = line[i...].firstIndex(of: "=") else { return nil }
            let label = String(line[i..<eq])
            var j = line.index(after: eq)
            guard j < line.endIndex, line[j] == "\"" else { return nil }
            j = line.index(after: j)
            var value = ""
            var closed = false
            while j < line.endIndex {
                let c = line[j]
                if c == "\\" {
                    j = line.index(after: j)
                    guard j < line.endIndex else { return nil }
                    switch line[j] {
                    case "n": value.append("\n")
                    case "\\": value.append("\\")
                    case "\"": value.append("\"")
                    default: return nil
                    }
                } else if c == "\"" {
                    closed = true
                    j = line.index(after: j)
                    break
                } else {
                    value.append(c)
                }
                j = line.index(after: j)
            }
            guard closed else { return nil }
            labels[label] = value
            if j < line.endIndex, line[j] == "," { j = line.index(after: j) }
            i = j
        }
        guard i < line.endIndex, let command = labels["command"], let group = labels["group"],
            let repository = labels["repository"]
        else { return nil }
        let rest = line[line.index(after: i)...].split(separator: " ", omittingEmptySubsequences: true)
        guard let first = rest.first, let value = Double(first), value.isFinite else { return nil }
        return (name, RunMetrics.Key(repository: repository, command: command, group: group), value)
    }
}
