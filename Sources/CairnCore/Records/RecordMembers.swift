/// One chunk a record carries: the record's own chunk, or one member of a frame record.
struct FrameMember: Equatable {
    var digest: ChunkDigest
    var rawLength: Int
    var kind: ChunkKind
    /// Where the member starts in the record's plain bytes (the sum of the lengths before it).
    var offset: Int
}

/// The chunks a record carries, read from its bytes in place: nothing is copied or allocated,
/// so the backup writer, pack writer and archive readers walk a frame's members for free.
///
/// Made only by `EncodedRecord`, whose member list was either just written by `ChunkEncoder`
/// or checked (`EncodedRecord(checking:)`): every entry's kind is known and the lengths add up.
///
/// A frame's member list (docs/FORMAT.md, "Frame records"): a member count (4), then per member
/// digest (32), raw length (4), kind (1), reserved (3).
struct RecordMembers: Sequence {
    /// Bytes of the member count at the start of a frame's payload.
    static let countSize = 4
    /// Bytes of one member's entry.
    static let entrySize = 40

    /// The one chunk of a plain record; nil for a frame.
    fileprivate let single: FrameMember?
    /// A frame's entries (after the count).
    fileprivate let entries: UnsafeRawBufferPointer
    let count: Int

    init(single: FrameMember) {
        self.single = single
        entries = UnsafeRawBufferPointer(start: nil, count: 0)
        count = 1
    }

    init(frameEntries entries: UnsafeRawBufferPointer) {
        single = nil
        self.entries = entries
        count = entries.count / Self.entrySize
    }

    /// No chunks (a reader that has read no frame yet).
    static var none: RecordMembers { RecordMembers(frameEntries: UnsafeRawBufferPointer(start: nil, count: 0)) }

    var underestimatedCount: Int { count }

    func makeIterator() -> Iterator { Iterator(members: self) }

    struct Iterator: IteratorProtocol {
        fileprivate let members: RecordMembers
        fileprivate var index = 0
        fileprivate var offset = 0

        mutating func next() -> FrameMember? {
            guard index < members.count else { return nil }
            defer { index += 1 }
            if let single = members.single { return single }
            let member = RecordMembers.entry(members.entries, index, offset: offset)
            offset += member.rawLength
            return member
        }
    }

    /// Entry `i` of a list whose kinds are known good.
    fileprivate static func entry(_ entries: UnsafeRawBufferPointer, _ i: Int, offset: Int) -> FrameMember {
        let at = i * entrySize
        return FrameMember(
            digest: ChunkDigest(loadingFrom: entries, at: at),
            rawLength: Int(UInt32(littleEndian: entries.loadUnaligned(fromByteOffset: at + 32, as: UInt32.self))),
            kind: ChunkKind(rawValue: entries[at + 36]) ?? .data, offset: offset)
    }

    /// Writes entry `i` of a frame's list into `entries` (the bytes after the count).
    static func store(
        _ digest: ChunkDigest, rawLength: Int, kind: ChunkKind, at i: Int, into entries: UnsafeMutableRawBufferPointer
    ) {
        let at = i * entrySize
        digest.store(to: entries, at: at)
        entries.storeBytes(of: UInt32(rawLength).littleEndian, toByteOffset: at + 32, as: UInt32.self)
        entries.storeBytes(of: UInt32(kind.rawValue).littleEndian, toByteOffset: at + 36, as: UInt32.self)
    }

    /// Checks the member list at the start of a frame's payload: a count of 1 to
    /// `PackFormat.maxFrameMembers` that fits, known kinds (never a frame), and lengths that add
    /// up to the frame's raw length. Returns the list's length (count and entries); the frame's
    /// stored data follows it. `place` names the record in errors and is only built for one.
    static func checkList(
        payload: UnsafeRawBufferPointer, rawLength: Int, code: CairnError.Code, place: () -> String
    ) throws(CairnError) -> Int {
        guard payload.count >= countSize else {
            throw CairnError(code, "the frame record\(place()) is too short for a frame record")
        }
        let count = Int(UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard count >= 1, count <= PackFormat.maxFrameMembers, countSize + count * entrySize <= payload.count,
            rawLength <= PackFormat.maxFrameBytes
        else {
            throw CairnError(code, "the frame record\(place()) has a malformed frame member list (\(count) members)")
        }
        var total = 0
        for i in 0..<count {
            let at = countSize + i * entrySize
            let length = Int(UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: at + 32, as: UInt32.self)))
            guard let kind = ChunkKind(rawValue: payload[at + 36]), kind != .frame, length <= PackFormat.maxFrameBytes
            else {
                throw CairnError(code, "the frame record\(place()) lists a malformed frame member \(i)")
            }
            total += length
        }
        guard total == rawLength else {
            throw CairnError(
                code, "the frame record\(place()): its frame members add up to \(total) bytes, not \(rawLength)")
        }
        return countSize + count * entrySize
    }
}
