/// The L1/L2 walk: what one guest range maps to, and the `DiskImage` reads built on it.
extension QCOW2Image {
    /// Where a run of guest bytes comes from. A run never crosses a cluster (or, for
    /// unallocated L2 ranges, an L2 table's span) and has one state throughout.
    enum RunSource: Equatable {
        /// Not allocated in this layer: the backing image, or zeros.
        case backing
        case zero
        /// Host offset (in the image or its external data file) of the run's first byte.
        case data(host: UInt64)
        /// A compressed cluster, by its L2 descriptor.
        case compressed(descriptor: UInt64)
    }

    struct Run {
        var source: RunSource
        var length: UInt64
    }

    /// Maps the guest bytes starting at `guest`, at most `limit` of them.
    func run(at guest: UInt64, limit: UInt64) throws(CairnError) -> Run {
        let cluster = guest >> clusterBits
        let l1Index = cluster / l2Entries
        let l2Index = Int(cluster % l2Entries)
        let inCluster = guest & (clusterSize - 1)
        let l2Offset = l1[Int(l1Index)] & Self.offsetMask
        if l2Offset == 0 {
            let spanEnd = (l1Index + 1) * l2Entries * clusterSize
            return Run(source: .backing, length: min(spanEnd - guest, limit))
        }
        let slot = try l2Cache.slot(for: l2Offset) { (table) throws(CairnError) in
            try file.readExactly(into: table, at: l2Offset)
        }
        let extended = header.hasExtendedL2
        let entry = l2Cache.word(slot, extended ? l2Index * 2 : l2Index)
        let bitmap = extended ? l2Cache.word(slot, l2Index * 2 + 1) : 0
        let toClusterEnd = min(clusterSize - inCluster, limit)
        func entryDescription() -> String {
            "L2 entry \(l2Index) of the L2 table at 0x\(qcow2Hex(l2Offset)) (guest offset 0x\(qcow2Hex(guest)))"
        }

        if entry & Self.compressedFlag != 0 {
            guard dataFile == nil else {
                throw bad("\(entryDescription()) is compressed, which an external data file forbids")
            }
            guard entry & Self.copiedFlag == 0, bitmap == 0 else {
                throw bad(
                    "\(entryDescription()) is compressed but has the copied flag or subcluster bits set: 0x\(qcow2Hex(entry))"
                )
            }
            return Run(source: .compressed(descriptor: entry), length: toClusterEnd)
        }
        // Version 2 has no zero flag: QEMU fails the read of such an entry ("Zero cluster entry
        // found in pre-v3 image"), so it is refused here rather than read as zeros.
        if entry & Self.zeroFlag != 0 && !extended && header.version < 3 {
            throw bad(
                "\(entryDescription()) has the zero flag (bit 0) set, which a version 2 image cannot have: 0x\(qcow2Hex(entry))"
            )
        }
        let reserved = entry & ~(Self.offsetMask | Self.copiedFlag | (extended ? 0 : Self.zeroFlag))
        guard reserved == 0 else { throw bad("\(entryDescription()) has reserved bits set: 0x\(qcow2Hex(entry))") }
        let host = entry & Self.offsetMask
        // Offset 0 means unallocated, except with an external data file where the copied flag
        // marks guest cluster 0 mapped at host offset 0.
        let hasHost = host != 0 || (dataFile != nil && entry & Self.copiedFlag != 0)
        if host == 0 && entry & Self.copiedFlag != 0 && dataFile == nil {
            throw bad("\(entryDescription()) has the copied flag but no host offset: 0x\(qcow2Hex(entry))")
        }
        // Whatever the cluster reads as, a host offset it carries must be valid (QEMU's rule): a
        // standard zero cluster carries one only when it is non-zero (preallocated zeros).
        let carriesHost = extended || entry & Self.zeroFlag == 0 ? hasHost : host != 0
        if carriesHost { try checkHostCluster(host, l2Offset: l2Offset, guest: guest) }

        guard extended else {
            if entry & Self.zeroFlag != 0 { return Run(source: .zero, length: toClusterEnd) }
            guard hasHost else { return Run(source: .backing, length: toClusterEnd) }
            try checkDataCluster(host, l2Offset: l2Offset, guest: guest)
            return Run(source: .data(host: host + inCluster), length: toClusterEnd)
        }

        // Extended L2: 32 subclusters, bits 0–31 allocated, bits 32–63 reads-as-zeros.
        let allocated = UInt32(truncatingIfNeeded: bitmap)
        let zeros = UInt32(truncatingIfNeeded: bitmap >> 32)
        guard allocated & zeros == 0 else {
            throw bad("\(entryDescription()) marks subclusters both allocated and zero (bitmap 0x\(qcow2Hex(bitmap)))")
        }
        guard allocated == 0 || hasHost else {
            throw bad(
                "\(entryDescription()) marks subclusters allocated but has no host offset (bitmap 0x\(qcow2Hex(bitmap)))"
            )
        }
        let subclusterSize = clusterSize / 32
        let first = Int(inCluster / subclusterSize)
        func state(_ index: Int) -> UInt32 { (allocated >> index & 1) << 1 | (zeros >> index & 1) }
        let firstState = state(first)
        var end = first + 1
        while end < 32 && state(end) == firstState { end += 1 }
        let length = min(UInt64(end) * subclusterSize - inCluster, limit)
        switch firstState {
        case 0: return Run(source: .backing, length: length)
        case 1: return Run(source: .zero, length: length)
        default:
            try checkDataCluster(host, l2Offset: l2Offset, guest: guest)
            return Run(source: .data(host: host + inCluster), length: length)
        }
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws(CairnError) -> ImageExtent {
        guard offset < virtualSize, maxLength > 0 else { return ImageExtent(length: 0, isZero: true) }
        let end = offset + min(maxLength, virtualSize - offset)
        var position = offset
        var isZero: Bool?
        while position < end {
            let run = try run(at: position, limit: end - position)
            var runZero: Bool
            var runLength = run.length
            switch run.source {
            case .zero: runZero = true
            case .data, .compressed: runZero = false
            case .backing:
                if let backing, position < backing.virtualSize {
                    let inner = try backing.extent(
                        at: position, maxLength: min(runLength, backing.virtualSize - position))
                    runZero = inner.isZero
                    runLength = inner.length
                } else {
                    runZero = true
                }
            }
            if let isZero, isZero != runZero { break }
            isZero = runZero
            position += runLength
        }
        return ImageExtent(length: position - offset, isZero: isZero ?? true)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(CairnError) {
        let count = UInt64(buffer.count)
        guard offset <= virtualSize, count <= virtualSize - offset else {
            throw CairnError(
                .usage, "\(file.path): read of \(count) bytes at \(offset) runs past the disk's end at \(virtualSize)")
        }
        var done: UInt64 = 0
        while done < count {
            let guest = offset + done
            let run = try run(at: guest, limit: count - done)
            var length = run.length
            switch run.source {
            case .zero:
                slice(buffer, done, length).initializeMemory(as: UInt8.self, repeating: 0)
            case .backing:
                try readBacking(into: slice(buffer, done, length), at: guest)
            case .data(let host):
                // Merge runs that continue at the next host byte into one read.
                while done + length < count {
                    let next = try self.run(at: guest + length, limit: count - done - length)
                    guard next.source == .data(host: host + length) else { break }
                    length += next.length
                }
                try checkDataBounds(host: host, count: length, guest: guest)
                let target = slice(buffer, done, length)
                let n = try (dataFile ?? file).read(into: target, at: host)
                guard n == target.count else {
                    throw bad("file shrank while it was read: data at host offset 0x\(qcow2Hex(host)) ends early")
                }
            case .compressed(let descriptor):
                try decompress(descriptor, guest: guest)
                let inCluster = Int(guest & (clusterSize - 1))
                clusterBuffer.withUnsafeBytes { cluster in
                    slice(buffer, done, length).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: cluster[inCluster..<inCluster + Int(length)]))
                }
            }
            done += length
        }
    }

    private func slice(
        _ buffer: UnsafeMutableRawBufferPointer, _ start: UInt64, _ length: UInt64
    ) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffer[Int(start)..<Int(start + length)])
    }

    /// Reads unallocated guest bytes: from the backing image up to its size, zeros past it.
    private func readBacking(into target: UnsafeMutableRawBufferPointer, at guest: UInt64) throws(CairnError) {
        var filled = 0
        if let backing, guest < backing.virtualSize {
            filled = Int(min(UInt64(target.count), backing.virtualSize - guest))
            try backing.read(into: UnsafeMutableRawBufferPointer(rebasing: target[0..<filled]), at: guest)
        }
        if filled < target.count {
            UnsafeMutableRawBufferPointer(rebasing: target[filled...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}
