/// One internal snapshot from the qcow2 snapshot table: its own L1 table and its own disk size.
///
/// Table layout: QEMU `docs/interop/qcow2.txt`, "Snapshots" (reference §8). Entries are variable
/// length, padded to 8 bytes; the extra data's second u64 is the snapshot's virtual disk size.
struct QCOW2Snapshot {
    static let maxCount: UInt32 = 65536
    /// Bytes of fixed fields before the extra data.
    static let fixedLength = 40

    var id: String
    var name: String
    var l1TableOffset: UInt64
    var l1Size: UInt32
    /// The snapshot's guest size, when its extra data records one.
    var diskSize: UInt64?
}

extension QCOW2Snapshot {
    /// Reads the snapshot table, checking that it lies inside the file and that its count is sane.
    ///
    /// - Complexity: O(count) reads of at most a few KiB each.
    static func readTable(
        _ file: File, fileSize: UInt64, header: QCOW2Header
    ) throws(CairnError) -> [QCOW2Snapshot] {
        let path = file.path
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): qcow2 \(message)") }
        let count = header.snapshotCount
        guard count > 0 else { return [] }
        guard count <= maxCount else {
            throw bad("nb_snapshots at offset 60 is \(count): at most \(maxCount) snapshots are allowed")
        }
        guard !header.hasDataFile else {
            throw bad("has internal snapshots and an external data file, which the qcow2 format forbids")
        }
        var offset = header.snapshotsOffset
        guard offset % header.clusterSize == 0, offset != 0 else {
            throw bad(
                "snapshots_offset at offset 64 is 0x\(qcow2Hex(offset)): it must be a non-zero multiple of the cluster size"
            )
        }
        var snapshots: [QCOW2Snapshot] = []
        snapshots.reserveCapacity(Int(min(count, 1024)))
        for index in 0..<count {
            func beyondEnd(_ what: String, _ at: UInt64) -> CairnError {
                bad(
                    "snapshot table entry \(index) (\(what)) at 0x\(qcow2Hex(at)) lies beyond the end of the file "
                        + "(size 0x\(qcow2Hex(fileSize))): the image is truncated")
            }
            guard offset <= fileSize, UInt64(fixedLength) <= fileSize - offset else {
                throw beyondEnd("header", offset)
            }
            var r = ByteReader(try file.readBytes(count: fixedLength, at: offset), context: "\(path): qcow2 snapshot")
            let l1Offset: UInt64 = try r.be()
            let l1Size: UInt32 = try r.be()
            let idLength: UInt16 = try r.be()
            let nameLength: UInt16 = try r.be()
            try r.skip(4 + 4 + 8 + 4)  // date, guest run time, legacy VM-state size
            let extraLength: UInt32 = try r.be()
            guard extraLength <= 1024 else {
                throw bad(
                    "snapshot table entry \(index) at 0x\(qcow2Hex(offset)) has \(extraLength) bytes of extra data: at most 1024 are allowed"
                )
            }
            let variable = UInt64(extraLength) + UInt64(idLength) + UInt64(nameLength)
            let start = offset + UInt64(fixedLength)
            guard start <= fileSize, variable <= fileSize - start else {
                throw beyondEnd("id, name and extra data", start)
            }
            let rest = try file.readBytes(count: Int(variable), at: start)
            var diskSize: UInt64?
            if extraLength >= 16 {
                var extra = ByteReader(rest, context: "\(path): qcow2 snapshot extra data", position: 8)
                diskSize = try extra.be()
            }
            let idStart = Int(extraLength)
            let nameStart = idStart + Int(idLength)
            let id = String(decoding: rest[idStart..<nameStart], as: UTF8.self)
            let name = String(decoding: rest[nameStart..<nameStart + Int(nameLength)], as: UTF8.self)
            snapshots.append(
                QCOW2Snapshot(id: id, name: name, l1TableOffset: l1Offset, l1Size: l1Size, diskSize: diskSize))
            offset = (start + variable + 7) / 8 * 8
        }
        return snapshots
    }
}
