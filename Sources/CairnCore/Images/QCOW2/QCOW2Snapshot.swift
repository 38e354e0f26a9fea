/// One internal snapshot from the qcow2 snapshot table: its own L1 table and its own disk size.
///
/// Table layout: QEMU `docs/interop/qcow2.txt`, "Snapshots" (reference §8). Entries are variable
/// length, padded to 8 bytes; the extra data's second u64 is the snapshot's virtual disk size.
struct QCOW2Snapshot {
    static let maxCount: UInt32 = 65536
    /// Bytes of fixed fields before the extra data.
    static let fixedLength = 40
    /// The largest snapshot table QEMU opens: 1 KiB for each of the 65536 snapshots it allows.
    static let maxTableBytes: UInt64 = 64 << 20

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
        var offset = header.snapshotsOffset
        // QEMU checks the offset even when there are no snapshots ("Snapshot table offset invalid"):
        // aligned, and the table no further than the largest signed 64-bit offset.
        guard offset % header.clusterSize == 0, offset <= UInt64(Int64.max) - UInt64(count) * UInt64(fixedLength) else {
            throw bad(
                "snapshots_offset at offset 64 is 0x\(qcow2Hex(offset)): it must be a multiple of the cluster size "
                    + "0x\(qcow2Hex(header.clusterSize)) that a file offset can reach")
        }
        guard count > 0 else { return [] }
        guard count <= maxCount else {
            throw bad("nb_snapshots at offset 60 is \(count): at most \(maxCount) snapshots are allowed")
        }
        guard !header.hasDataFile else {
            throw bad("has internal snapshots and an external data file, which the qcow2 format forbids")
        }
        guard offset != 0 else {
            throw bad(
                "snapshots_offset at offset 64 is 0 although nb_snapshots is \(count): the table would be the header")
        }
        let tableStart = offset
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
            // Version 3 requires the VM-state size and the disk size in the extra data
            // (`qemu-img check`: "snapshot table entry is incomplete").
            guard header.version < 3 || extraLength >= 16 else {
                throw bad(
                    "snapshot table entry \(index) at 0x\(qcow2Hex(offset)) has \(extraLength) bytes of extra data: "
                        + "a version 3 image needs at least 16")
            }
            let variable = UInt64(extraLength) + UInt64(idLength) + UInt64(nameLength)
            let start = offset + UInt64(fixedLength)
            guard start <= fileSize, variable <= fileSize - start else {
                throw beyondEnd("id, name and extra data", start)
            }
            // QEMU's limit on the whole table (QCOW_MAX_SNAPSHOTS_SIZE), which also bounds the reading.
            guard start + variable - tableStart <= maxTableBytes else {
                throw bad(
                    "snapshot table at 0x\(qcow2Hex(tableStart)) is larger than \(maxTableBytes >> 20) MiB at entry \(index)"
                )
            }
            try checkL1Table(l1Offset, size: l1Size, entry: index, fileSize: fileSize, header: header, bad: bad)
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

    /// Checks a snapshot's L1 table as `qemu-img check` does (aligned, at most 32 MiB, inside the
    /// file), for every snapshot and not only one being read: a broken entry means a damaged image.
    private static func checkL1Table(
        _ offset: UInt64, size: UInt32, entry index: UInt32, fileSize: UInt64, header: QCOW2Header,
        bad: (String) -> CairnError
    ) throws(CairnError) {
        let what = "snapshot table entry \(index): its L1 table at 0x\(qcow2Hex(offset)) (\(size) entries)"
        guard UInt64(size) <= QCOW2Image.maxL1Entries else {
            throw bad("\(what) is larger than the \(QCOW2Image.maxL1Entries) entries allowed")
        }
        guard offset % header.clusterSize == 0, size == 0 || offset != 0 else {
            throw bad("\(what) is not a non-zero multiple of the cluster size 0x\(qcow2Hex(header.clusterSize))")
        }
        let bytes = UInt64(size) * 8
        guard offset <= fileSize, bytes <= fileSize - offset else {
            throw bad("\(what) lies beyond the end of the file (size 0x\(qcow2Hex(fileSize))): the image is truncated")
        }
    }
}
