extension QCOW2Image {
    /// Opens the backing image named in `header`, if any.
    ///
    /// The name is resolved relative to the directory of the image naming it. The format must be
    /// explicit for raw: without a backing format extension only a qcow2 magic is accepted, because
    /// probing a raw backing file lets a guest that writes a qcow2 header into its own disk make the
    /// host read any file (reference §10). Loops (by real path) and chains deeper than
    /// `maxChainDepth` are refused.
    static func openBacking(
        header: QCOW2Header, of path: String, openedChain: [String]
    ) throws(CairnError) -> (image: any DiskImage, path: String)? {
        guard let name = header.backingFile else { return nil }
        func bad(_ message: String) -> CairnError { CairnError(.badImage, "\(path): qcow2 \(message)") }
        let resolved = resolve(name, nextTo: path)
        guard let real = FileSystem.realPath(resolved) else {
            throw bad("backing file \"\(name)\" (looked for at \(resolved)) does not exist")
        }
        if openedChain.contains(real) {
            throw bad("backing file \"\(name)\" (\(real)) is already part of this backing chain: the chain is a loop")
        }
        guard openedChain.count < maxChainDepth else {
            throw bad(
                "backing chain is deeper than \(maxChainDepth) images at backing file \"\(name)\"; Cairn refuses longer chains"
            )
        }
        let file = try File.open(resolved, .readOnly)
        let isQCOW2 = try file.readBytes(count: 4, at: 0) == DiskImageOpener.qcow2Magic
        switch header.backingFormat {
        case "qcow2"?:
            guard isQCOW2 else {
                throw bad(
                    "backing file \"\(name)\" is declared qcow2 by the backing format extension but has no qcow2 magic")
            }
            return (try QCOW2Image(file: file, snapshot: nil, openedChain: openedChain + [real]), resolved)
        case "raw"?:
            return (try RawImage(file: file), resolved)
        case let format?:
            throw bad("backing file \"\(name)\" has format \"\(format)\": Cairn reads only qcow2 and raw backing files")
        case nil:
            guard isQCOW2 else {
                throw bad(
                    "backing file \"\(name)\" has no backing format extension and is not qcow2; Cairn does not guess "
                        + "raw (a guest could forge it): set it with `qemu-img rebase -u -F raw -b \(name)` on a copy")
            }
            return (try QCOW2Image(file: file, snapshot: nil, openedChain: openedChain + [real]), resolved)
        }
    }
}
