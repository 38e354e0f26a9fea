/// Bytes of an archive, read front to back: a volume file, stdin, or memory.
public protocol ArchiveByteSource: AnyObject {
    var name: String { get }
    /// Fills `buffer` unless the source ends first; returns the bytes read.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(CairnError) -> Int
}

/// A volume file, a pipe or a tape device, read sequentially (never seeking).
///
/// A tape drive in variable block mode fails a `read(2)` shorter than the tape block, yet the
/// reader asks for 64 header bytes first to learn the block size. So a character device is read
/// through a 4 MiB staging buffer: 4 MiB is a multiple of every archive block size, so every
/// `read(2)` asks for whole blocks.
public final class FileByteSource: ArchiveByteSource {
    public let name: String
    let file: File
    private var staging: UnsafeMutableRawBufferPointer?
    private var stagedStart = 0
    private var stagedEnd = 0

    public init(file: File, name: String) {
        self.file = file
        self.name = name
        if StreamSink.isCharacterDevice(name) {
            staging = .allocate(byteCount: ArchiveFormat.blockSizeRange.upperBound, alignment: 4096)
        }
    }

    deinit { staging?.deallocate() }

    /// Opens `path`, or stdin for `-`.
    public static func open(_ path: String) throws(CairnError) -> FileByteSource {
        if path == "-" { return FileByteSource(file: File.standard(.standardInput, name: "stdin"), name: "stdin") }
        return FileByteSource(file: try File.open(path, .readOnly), name: path)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(CairnError) -> Int {
        guard let staging else { return try file.readSequential(into: buffer) }
        var done = 0
        while done < buffer.count {
            if stagedStart == stagedEnd {
                stagedStart = 0
                stagedEnd = try file.readSequential(into: staging)
                if stagedEnd == 0 { break }
            }
            let n = min(buffer.count - done, stagedEnd - stagedStart)
            (buffer.baseAddress! + done).copyMemory(from: staging.baseAddress! + stagedStart, byteCount: n)
            stagedStart += n
            done += n
        }
        return done
    }
}

public final class MemoryByteSource: ArchiveByteSource {
    public let name: String
    let bytes: [UInt8]
    var position = 0

    public init(_ bytes: [UInt8], name: String) {
        self.bytes = bytes
        self.name = name
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(CairnError) -> Int {
        let n = min(buffer.count, bytes.count - position)
        bytes.withUnsafeBytes { raw in
            if n > 0 { buffer.baseAddress!.copyMemory(from: raw.baseAddress! + position, byteCount: n) }
        }
        position += n
        return n
    }
}

/// Where something is in an archive: a volume and a block within it (both as a reader counts:
/// volume from 1, block from 0 = the label), and the source it was read from.
public struct ArchiveLocation: Sendable, Equatable, CustomStringConvertible {
    public var volume: Int
    public var block: Int
    public var source: String

    public var description: String { "volume \(volume) block \(block) (\(source))" }
}

/// Damage found in a pass that did not stop it: the rest of the archive is still read.
public struct ArchiveProblem: Sendable, Equatable, CustomStringConvertible {
    public var location: ArchiveLocation?
    public var message: String
    /// `.damaged` for checksum and digest failures, `.badArchive` for structural ones.
    public var code: CairnError.Code

    public var description: String {
        if let location { return "\(location): \(message)" }
        return message
    }
}

/// One data block as the record reader sees it.
struct ArchiveDataBlock {
    var location: ArchiveLocation
    /// Nil when the block is damaged and its payload cannot be used.
    var payload: UnsafeRawBufferPointer?
    var firstRecordOffset: UInt32
}

/// Reads blocks in order over the given volumes, checking every header; hands out data blocks.
///
/// Structural faults (not an archive, unknown version, a volume missing, repeated or out of
/// order, a gap or duplicate in the sequence numbers, a truncated volume) end the pass with a
/// `.badArchive` error. A block whose payload or header fails its CRC is reported as a problem
/// and handed out without payload, so the reader can carry on with the next record.
final class ArchiveBlockReader {
    private let sources: [any ArchiveByteSource]
    private var sourceIndex = 0
    private var buffer: UnsafeMutableRawBufferPointer?
    private var blockSize = 0
    private(set) var label: ArchiveLabel?
    private(set) var archive: ArchiveID?
    private(set) var catalogs: [ArchiveVolumeCatalog] = []
    private(set) var problems: [ArchiveProblem] = []
    private(set) var ended = false
    /// Told volume 1's label once it is read and checked, before any record is handed out
    /// (an encrypted archive is unlocked there).
    var onLabel: ((ArchiveLabel) throws(CairnError) -> Void)?
    /// Whole blocks read so far, of every kind.
    private(set) var blocksRead: UInt64 = 0
    var bytesRead: UInt64 { blocksRead * UInt64(blockSize) }

    private var atVolumeStart = true
    private var expectedVolume = 1
    private var expectedSequence: UInt64 = 0
    private var blockInVolume = 0
    private var catalogBytes: [UInt8] = []
    private var lastBlockOfVolume = 0

    init(sources: [any ArchiveByteSource]) {
        self.sources = sources
    }

    deinit { buffer?.deallocate() }

    var volumesRead: Int { expectedVolume - (atVolumeStart ? 1 : 0) }
    private var sourceName: String {
        sourceIndex < sources.count ? sources[sourceIndex].name : sources.last?.name ?? "-"
    }
    private var here: ArchiveLocation {
        ArchiveLocation(volume: expectedVolume, block: blockInVolume, source: sourceName)
    }

    func report(_ location: ArchiveLocation?, _ message: String, _ code: CairnError.Code = .damaged) {
        problems.append(ArchiveProblem(location: location, message: message, code: code))
    }

    private func fatal(_ message: String, at location: ArchiveLocation? = nil) -> CairnError {
        let place = location ?? here
        return CairnError(.badArchive, "\(place): \(message)")
    }

    /// Reads the next whole block into `buffer`; false when every source ended at a block boundary.
    private func readRawBlock() throws(CairnError) -> Bool {
        while sourceIndex < sources.count {
            let source = sources[sourceIndex]
            if buffer == nil {
                // The first block: its header tells the block size.
                var head = [UInt8](repeating: 0, count: ArchiveFormat.blockHeaderSize)
                let n = try head.withMutableBytesThrowing { raw throws(CairnError) in try source.read(into: raw) }
                if n == 0 {
                    sourceIndex += 1
                    continue
                }
                let parsed = head.withUnsafeBytes { raw in
                    ArchiveBlockHeader.parse(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                }
                let header: ArchiveBlockHeader
                switch parsed {
                case .success(let h): header = h
                case .failure(let box): throw headerFailure(box.failure, first: true)
                }
                blockSize = Int(header.blockSize)
                let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
                head.withUnsafeBytes { block.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
                buffer = block
                let rest = try source.read(into: UnsafeMutableRawBufferPointer(rebasing: block[n...]))
                if n + rest != blockSize { throw cutOff(n + rest) }
                return true
            }
            let n = try source.read(into: buffer!)
            if n == blockSize { return true }
            if n == 0 {
                guard atVolumeStart else {
                    throw fatal(
                        "the volume ends after \(blockInVolume) blocks without its catalog and end-of-volume block: it is truncated"
                    )
                }
                sourceIndex += 1
                continue
            }
            throw cutOff(n)
        }
        return false
    }

    private func cutOff(_ n: Int) -> CairnError {
        fatal("the block is cut off after \(n) of \(blockSize) bytes: the volume is truncated")
    }

    private func headerFailure(_ failure: ArchiveBlockHeader.ParseFailure, first: Bool) -> CairnError {
        switch failure {
        case .notAnArchive:
            if first {
                return CairnError(
                    .badArchive, "\(sourceName) is not a Cairn archive (no archive block header at its start)")
            }
            return fatal(
                "no archive block header where volume \(expectedVolume) should begin: not a Cairn archive volume")
        case .unknownVersion(let v):
            return fatal(
                "the archive has format version \(v); this Cairn reads version \(ArchiveFormat.version) (use a Cairn that knows version \(v))"
            )
        case .badCRC:
            return fatal("the block header fails its CRC")
        case .malformed(let why):
            return fatal("the block header is malformed: \(why)")
        }
    }

    /// The next data block, or nil after the archive's last block.
    func nextDataBlock() throws(CairnError) -> ArchiveDataBlock? {
        while !ended {
            let first = buffer == nil
            guard try readRawBlock() else {
                if first {
                    throw CairnError(
                        .badArchive, "no archive data: \(sources.map(\.name).joined(separator: ", ")) is empty")
                }
                throw CairnError(
                    .badArchive,
                    "after volume \(expectedVolume - 1) block \(lastBlockOfVolume) (\(sources.last!.name)): the archive continues in volume \(expectedVolume), which was not given: a volume is missing"
                )
            }
            blocksRead += 1
            let block = buffer!
            let parsed = ArchiveBlockHeader.parse(UnsafeRawBufferPointer(block))
            let location = here
            let header: ArchiveBlockHeader
            switch parsed {
            case .success(let h):
                header = h
            case .failure(let box):
                if atVolumeStart || box.failure.isStructural { throw headerFailure(box.failure, first: first) }
                // A damaged header: the block's place is known (blocks are fixed-size), its contents are not.
                report(location, "the block header fails its CRC; its payload is skipped")
                expectedSequence += 1
                blockInVolume += 1
                return ArchiveDataBlock(
                    location: location, payload: nil, firstRecordOffset: ArchiveFormat.noRecordStart)
            }
            if let archive {
                guard header.archive == archive else {
                    throw fatal(
                        "the block belongs to archive \(header.archive), not \(archive): a volume of another archive")
                }
                guard Int(header.blockSize) == blockSize else {
                    throw fatal("the block size changes from \(blockSize) to \(header.blockSize)")
                }
            } else {
                archive = header.archive
            }
            let payload = UnsafeRawBufferPointer(
                rebasing: block[
                    ArchiveFormat.blockHeaderSize..<ArchiveFormat.blockHeaderSize + Int(header.payloadLength)])
            let payloadIntact = CRC32.checksum(payload) == header.payloadCRC

            if atVolumeStart {
                guard header.flags.contains(.label) else {
                    throw fatal("volume \(expectedVolume) should begin with its label block, but this block is not one")
                }
                if Int(header.volume) != expectedVolume {
                    let v = Int(header.volume)
                    if v < expectedVolume {
                        throw fatal(
                            "\(sourceName) is volume \(v) again or out of order: volume \(expectedVolume) comes next (give the volumes in order, each once)"
                        )
                    }
                    throw fatal(
                        "\(sourceName) is volume \(v), but volume \(expectedVolume) comes next: volume \(expectedVolume) is missing or out of order"
                    )
                }
                guard header.sequence == expectedSequence else {
                    throw fatal(
                        "the label's sequence number is \(header.sequence), not \(expectedSequence): blocks are missing between volumes"
                    )
                }
                guard payloadIntact else { throw fatal("the volume label fails its CRC") }
                let decoded = try JSONCoding.decode(
                    ArchiveLabel.self, from: Array(payload), what: "the label of \(location)")
                if let feature = FormatFeature.unknown(in: decoded.features ?? []) {
                    throw FormatFeature.refusal("the archive", feature: feature, code: .badArchive)
                }
                guard decoded.archive == header.archive.hex, decoded.volume == expectedVolume,
                    decoded.archiveBlockSize == blockSize,
                    RepositoryConfig.blockSizeRange.contains(decoded.chunkBlockSize)
                else { throw fatal("the volume label disagrees with its block header") }
                if label == nil {
                    label = decoded
                    try onLabel?(decoded)
                }
                guard decoded.chunkBlockSize == label!.chunkBlockSize else {
                    throw fatal("the label's chunk block size \(decoded.chunkBlockSize) differs from volume 1's")
                }
                atVolumeStart = false
                expectedSequence += 1
                blockInVolume = 1
                catalogBytes = []
                continue
            }
            guard Int(header.volume) == expectedVolume else {
                throw fatal("the block claims volume \(header.volume) inside volume \(expectedVolume)")
            }
            if header.sequence != expectedSequence {
                if header.sequence < expectedSequence {
                    throw fatal(
                        "the block has sequence number \(header.sequence), expected \(expectedSequence): a duplicated or reordered block"
                    )
                }
                throw fatal(
                    "the block has sequence number \(header.sequence), expected \(expectedSequence): \(header.sequence - expectedSequence) blocks are missing or out of order"
                )
            }
            guard !header.flags.contains(.label) else {
                throw fatal("a label block in the middle of volume \(expectedVolume)")
            }
            expectedSequence += 1
            blockInVolume += 1
            if header.flags.contains(.catalog) {
                if payloadIntact {
                    guard catalogBytes.count + payload.count <= ArchiveFormat.maxCatalogBytes else {
                        throw fatal("the volume catalog is larger than \(ArchiveFormat.maxCatalogBytes) bytes")
                    }
                    catalogBytes.append(contentsOf: payload)
                } else {
                    report(location, "a block of the volume catalog fails its CRC")
                    catalogBytes = []
                }
                if header.flags.contains(.endOfVolume) {
                    if !catalogBytes.isEmpty {
                        if let catalog = try? JSONCoding.decode(
                            ArchiveVolumeCatalog.self, from: catalogBytes, what: "catalog")
                        {
                            catalogs.append(catalog)
                        } else {
                            report(location, "the volume catalog is not valid JSON", .badArchive)
                        }
                    }
                    atVolumeStart = true
                    expectedVolume += 1
                    lastBlockOfVolume = blockInVolume - 1
                    blockInVolume = 0
                    if header.flags.contains(.endOfArchive) { ended = true }
                }
                continue
            }
            guard !header.flags.contains(.endOfVolume) else {
                throw fatal("a data block is flagged as the end of the volume")
            }
            if !payloadIntact {
                report(location, "the block's payload fails its CRC; the records in it are lost")
                return ArchiveDataBlock(
                    location: location, payload: nil, firstRecordOffset: ArchiveFormat.noRecordStart)
            }
            return ArchiveDataBlock(location: location, payload: payload, firstRecordOffset: header.firstRecordOffset)
        }
        return nil
    }
}

extension ArchiveBlockHeader.ParseFailure {
    /// Failures no reader can step over: the stream is not (or no longer) an archive it knows.
    var isStructural: Bool {
        switch self {
        case .notAnArchive, .unknownVersion: return true
        case .badCRC, .malformed: return false
        }
    }
}

/// One record of the stream; `body` is valid until the next call to `next()`.
struct ArchiveRecord {
    var type: ArchiveRecordType
    var body: UnsafeRawBufferPointer
    /// Where the record's header begins.
    var location: ArchiveLocation
    /// The record's number in the stream, from 0.
    var ordinal: Int
    /// Where its header begins in that block's payload.
    var payloadOffset: Int
}

/// The record stream over data blocks: reassembles records that span blocks and volumes.
///
/// After a damaged block, the record in progress is reported lost and reading resumes at the
/// first record that begins in a later intact block (its header's first-record offset).
final class ArchiveRecordReader {
    let blocks: ArchiveBlockReader
    private var current: ArchiveDataBlock?
    private var position = 0
    private var synced = true
    private var body: UnsafeMutableRawBufferPointer
    private let header = UnsafeMutableRawBufferPointer.allocate(
        byteCount: ArchiveFormat.recordHeaderSize, alignment: 16)
    private var ordinal = 0
    /// Damaged blocks met so far: a change while a record is read means the record is lost.
    private var lostBlocks = 0

    init(blocks: ArchiveBlockReader) {
        self.blocks = blocks
        body = .allocate(byteCount: 1 << 20, alignment: 64)
    }

    deinit {
        body.deallocate()
        header.deallocate()
    }

    private enum Fill { case done, damaged, ended }

    /// Makes `current` an intact block with unread payload at a record boundary when unsynced.
    private func advance() throws(CairnError) -> Bool {
        while true {
            if let block = current, let payload = block.payload, position < payload.count { return true }
            guard let next = try blocks.nextDataBlock() else {
                current = nil
                return false
            }
            current = next
            position = 0
            if next.payload == nil {
                lostBlocks += 1
                synced = false
                continue
            }
            if !synced {
                guard next.firstRecordOffset != ArchiveFormat.noRecordStart else {
                    // No record begins here: the whole payload belongs to the lost record.
                    position = next.payload!.count
                    continue
                }
                position = Int(next.firstRecordOffset)
                synced = true
            }
        }
    }

    private func fill(_ target: UnsafeMutableRawBufferPointer) throws(CairnError) -> Fill {
        var done = 0
        while done < target.count {
            let lost = lostBlocks
            guard try advance() else { return .ended }
            if lostBlocks != lost { return .damaged }
            let payload = current!.payload!
            let n = min(payload.count - position, target.count - done)
            (target.baseAddress! + done).copyMemory(from: payload.baseAddress! + position, byteCount: n)
            position += n
            done += n
        }
        return .done
    }

    /// The next intact record, or nil at the end of the stream. Lost records are reported.
    func next() throws(CairnError) -> ArchiveRecord? {
        while true {
            // A damaged block anywhere before the header makes `advance` skip to a record start.
            guard try advance() else { return nil }
            let location = current!.location
            let payloadOffset = position
            switch try fill(header) {
            case .ended:
                blocks.report(location, "a record header is cut off by the end of the archive", .badArchive)
                return nil
            case .damaged:
                blocks.report(location, "the record beginning here is lost with a damaged block")
                continue
            case .done: break
            }
            let type: ArchiveRecordType
            let length: Int
            switch ArchiveRecordHeader.parse(UnsafeRawBufferPointer(header)) {
            case .success(let (t, l)):
                type = t
                length = l
            case .failure(let error):
                blocks.report(
                    location, "record \(ordinal): \(error.message); skipping to the next block's first record",
                    error.code)
                ordinal += 1
                synced = false
                current = nil
                continue
            }
            if length > body.count {
                body.deallocate()
                body = .allocate(byteCount: length, alignment: 64)
            }
            let target = UnsafeMutableRawBufferPointer(rebasing: body[0..<length])
            switch try fill(target) {
            case .ended:
                blocks.report(
                    location, "the \(type.name) record beginning here is cut off by the end of the archive", .badArchive
                )
                return nil
            case .damaged:
                blocks.report(
                    location, "the \(type.name) record \(ordinal) beginning here is lost with a damaged block")
                ordinal += 1
                continue
            case .done: break
            }
            defer { ordinal += 1 }
            return ArchiveRecord(
                type: type, body: UnsafeRawBufferPointer(target), location: location, ordinal: ordinal,
                payloadOffset: payloadOffset)
        }
    }
}
