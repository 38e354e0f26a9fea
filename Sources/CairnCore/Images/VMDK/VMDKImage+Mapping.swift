/// The extent and grain walk: what one guest range maps to, and the `DiskImage` reads built on it.
extension VMDKImage {
    /// Where a run of guest bytes comes from. A run never crosses an extent, a grain table or a
    /// compressed grain.
    enum RunSource: Equatable {
        /// Not allocated in this layer: the parent, or zeros.
        case parent
        case zero
        /// Bytes of a flat extent or an uncompressed grain, from this byte of the part's file.
        case data(host: UInt64)
        /// Inside a compressed grain whose marker is at this sector.
        case compressed(sector: UInt64)
    }

    struct Run {
        var part: Int
        var source: RunSource
        var length: UInt64
    }

    /// The index of the part holding guest byte `offset` (`offset` < virtualSize).
    private func partIndex(_ offset: UInt64) -> Int {
        var low = 0
        var high = parts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if parts[middle].start <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// Maps the guest bytes starting at `guest`, at most `limit` of them.
    func run(at guest: UInt64, limit: UInt64) throws(CairnError) -> Run {
        let index = partIndex(guest)
        let part = parts[index]
        let inPart = guest - part.start
        let toPartEnd = min(part.length - inPart, limit)
        switch part.storage {
        case .zero:
            return Run(part: index, source: .zero, length: toPartEnd)
        case .flat(_, let base):
            return Run(part: index, source: .data(host: base + inPart), length: toPartEnd)
        case .sparse(let extent):
            let (grain, length) = try extent.run(at: inPart, limit: toPartEnd)
            switch grain {
            case .unallocated: return Run(part: index, source: .parent, length: length)
            case .zero: return Run(part: index, source: .zero, length: length)
            case .data(let byteOffset): return Run(part: index, source: .data(host: byteOffset), length: length)
            case .compressed(let sector): return Run(part: index, source: .compressed(sector: sector), length: length)
            }
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
            case .compressed: runZero = false
            case .data(let host):
                guard case .flat(let file, _) = parts[run.part].storage, file.isRegularFile else {
                    runZero = false
                    break
                }
                // A thin -flat.vmdk copied over NFS keeps its holes: skip them without reading.
                if let data = try file.nextData(from: host), data < host + runLength {
                    if data > host {
                        runZero = true
                        runLength = data - host
                    } else {
                        runZero = false
                        runLength = max(1, min(runLength, try file.nextHole(from: host) - host))
                    }
                } else {
                    runZero = true
                }
            case .parent:
                if let parent, position < parent.virtualSize {
                    let inner = try parent.extent(
                        at: position, maxLength: min(runLength, parent.virtualSize - position))
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
                .usage, "\(path): read of \(count) bytes at \(offset) runs past the disk's end at \(virtualSize)")
        }
        var done: UInt64 = 0
        while done < count {
            let guest = offset + done
            let run = try run(at: guest, limit: count - done)
            var length = run.length
            let part = parts[run.part]
            switch run.source {
            case .zero:
                slice(buffer, done, length).initializeMemory(as: UInt8.self, repeating: 0)
            case .parent:
                try readParent(into: slice(buffer, done, length), at: guest)
            case .data(let host):
                // Merge runs that continue at the next byte of the same file into one read.
                while done + length < count {
                    let next = try self.run(at: guest + length, limit: count - done - length)
                    guard next.part == run.part, next.source == .data(host: host + length) else { break }
                    length += next.length
                }
                let file: File
                switch part.storage {
                case .flat(let flat, _): file = flat
                case .sparse(let extent): file = extent.file
                case .zero: preconditionFailure("zero extents have no data runs")
                }
                let target = slice(buffer, done, length)
                let n = try file.read(into: target, at: host)
                guard n == target.count else {
                    throw CairnError(
                        .badImage, "\(file.path): vmdk extent shrank while it was read: data at byte \(host) ends early"
                    )
                }
            case .compressed(let sector):
                guard case .sparse(let extent) = part.storage, let hosted = extent as? VMDKSparseExtent else {
                    preconditionFailure("compressed runs are in hosted sparse extents")
                }
                try hosted.readCompressed(into: slice(buffer, done, length), sector: sector, at: guest - part.start)
            }
            done += length
        }
    }

    private func slice(
        _ buffer: UnsafeMutableRawBufferPointer, _ start: UInt64, _ length: UInt64
    ) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffer[Int(start)..<Int(start + length)])
    }

    /// Reads unallocated guest bytes: from the parent up to its size, zeros past it.
    private func readParent(into target: UnsafeMutableRawBufferPointer, at guest: UInt64) throws(CairnError) {
        var filled = 0
        if let parent, guest < parent.virtualSize {
            filled = Int(min(UInt64(target.count), parent.virtualSize - guest))
            try parent.read(into: UnsafeMutableRawBufferPointer(rebasing: target[0..<filled]), at: guest)
        }
        if filled < target.count {
            UnsafeMutableRawBufferPointer(rebasing: target[filled...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}
