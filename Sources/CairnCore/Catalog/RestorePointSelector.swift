/// How a command names a restore point: by id, as a group's newest, or as a group's newest at
/// or before a time. Parsed once, here, from what the command line gave.
public enum RestorePointSelector: Sendable, Hashable, CustomStringConvertible {
    /// `GROUP@TIME`, exactly one restore point.
    case id(RestorePointID)
    /// `GROUP@latest`.
    case latest(group: String)
    /// A group and a time (`--group G --at TIME`): the newest restore point at or before it.
    case atOrBefore(group: String, time: Timestamp)

    /// Parses `GROUP@TIME` or `GROUP@latest` (TIME as ids print it; a time without a zone is UTC,
    /// as ids are).
    public init(parsing text: String) throws(CairnError) {
        if text.hasSuffix("@latest") {
            let group = String(text.dropLast("@latest".count))
            try GroupName.validate(group)
            self = .latest(group: group)
            return
        }
        guard let id = RestorePointID(parsing: text) else {
            throw CairnError(
                .usage,
                "\"\(text)\" is not a restore point id: use GROUP@TIME (e.g. vm1@2026-11-26T03:00:00Z) or GROUP@latest")
        }
        self = .id(id)
    }

    /// A group and a time a person typed: with a zone (`Z`, `+01:00`) or without one, then in
    /// local time (`TZ`).
    public init(group: String, at text: String) throws(CairnError) {
        try GroupName.validate(group)
        guard let time = Timestamp(parsing: text, zoneless: .local) else {
            throw CairnError(
                .usage,
                "\"\(text)\" is not a time (use e.g. 2026-11-26T03:00:00Z, 2026-11-26T04:00:00+01:00, or a local 2026-11-26 04:00)"
            )
        }
        self = .atOrBefore(group: group, time: time)
    }

    /// The group every form names.
    public var group: String {
        switch self {
        case .id(let id): return id.group
        case .latest(let group), .atOrBefore(let group, _): return group
        }
    }

    /// Whether `id` is one this selector could pick (the right group, and at or before its time).
    public func admits(_ id: RestorePointID) -> Bool {
        switch self {
        case .id(let wanted): return id == wanted
        case .latest(let group): return id.group == group
        case .atOrBefore(let group, let time): return id.group == group && id.time <= time
        }
    }

    /// The restore point it selects from `ids` (any order), or nil: the newest it admits.
    public func select(from ids: some Sequence<RestorePointID>) -> RestorePointID? {
        ids.filter(admits).max()
    }

    public var description: String {
        switch self {
        case .id(let id): return id.description
        case .latest(let group): return "\(group)@latest"
        case .atOrBefore(let group, let time): return "the newest restore point of \(group) at or before \(time)"
        }
    }
}

extension Catalog {
    /// The existing restore point `selector` names, or a `.notFound` error that says what there is.
    public func resolve(_ selector: RestorePointSelector) throws(CairnError) -> RestorePointID {
        let scan = try scan(group: selector.group)
        let known = scan.points
        if case .id(let id) = selector, exists(id) { return id }
        // A manifest that does not open (encrypted repositories only) may be the one asked
        // for: no other restore point is picked in its place.
        if let unreadable = scan.unreadable.first {
            throw CairnError(
                .damaged,
                "\(scan.unreadable.count) restore point(s) of \(selector.group) cannot be read, so \(selector) is unknown: \(unreadable.problem); name a readable one by its time (`cairn list`), and run `cairn verify`"
            )
        }
        if let found = selector.select(from: known), exists(found) { return found }
        switch selector {
        case .id(let id):
            let hint =
                known.isEmpty
                ? "group \(id.group) has no restore points"
                : "\(id.group) has \(known.count), the newest \(known.last!)"
            throw CairnError(.notFound, "restore point \(id) does not exist (\(hint))")
        case .latest(let group):
            throw CairnError(.notFound, "group \(group) has no restore points")
        case .atOrBefore(let group, let time):
            throw CairnError(
                .notFound,
                known.first.map {
                    "group \(group) has no restore point at or before \(time) (the oldest is \($0.time))"
                } ?? "group \(group) has no restore points")
        }
    }

    /// Resolves `GROUP@TIME` or `GROUP@latest` to an existing restore point.
    public func resolve(_ text: String) throws(CairnError) -> RestorePointID {
        try resolve(try RestorePointSelector(parsing: text))
    }
}
