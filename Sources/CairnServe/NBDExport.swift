public import CairnCore

/// One disk of one restore point, as an NBD export.
///
/// Names are `GROUP@TIME/DISK` (`vm1@2026-11-26T03:00:00Z/vm1.qcow2`): stable, one per disk,
/// and what `nbdinfo --list` shows. A client may also ask for `GROUP@latest/DISK` (the newest
/// served restore point of that group) or, when only one export is served, the empty name.
public struct NBDExport: Sendable {
    public let name: String
    public let description: String
    public let reader: DiskReader

    public init(reader: DiskReader) {
        self.reader = reader
        name = Self.name(of: reader.id, disk: reader.disk.name)
        description =
            "restore point \(reader.id): group \(reader.id.group), time \(reader.id.time), disk \(reader.disk.name), \(reader.size) bytes (\(Units.formatBytes(reader.size)))"
    }

    public var size: UInt64 { reader.size }

    public static func name(of id: RestorePointID, disk: String) -> String { "\(id)/\(disk)" }

    /// `nbd+unix:///NAME?socket=PATH`, with the name and path percent-encoded where URIs need it.
    public func unixURI(socket: String) -> String {
        "nbd+unix:///\(Self.percentEncoded(name, keeping: "/:@"))?socket=\(Self.percentEncoded(socket, keeping: "/"))"
    }

    /// `nbd://HOST:PORT/NAME` (or `nbds://` with TLS).
    public func tcpURI(host: String, port: Int, tls: Bool) -> String {
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "\(tls ? "nbds" : "nbd")://\(shownHost):\(port)/\(Self.percentEncoded(name, keeping: "/:@"))"
    }

    static func percentEncoded(_ text: String, keeping extra: String) -> String {
        var out = ""
        for byte in text.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || "-._~".utf8.contains(byte) || extra.utf8.contains(byte)
            {
                out.append(c)
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}

/// The exports a server offers, found by name.
public struct NBDExportList: Sendable {
    public let exports: [NBDExport]
    private let byName: [String: Int]

    public init(_ exports: [NBDExport]) {
        self.exports = exports
        var byName: [String: Int] = [:]
        for (i, export) in exports.enumerated() { byName[export.name] = i }
        self.byName = byName
    }

    /// The export a client's name selects, or nil.
    public func find(_ name: String) -> NBDExport? {
        if let i = byName[name] { return exports[i] }
        if name.isEmpty, exports.count == 1 { return exports[0] }
        // GROUP@latest/DISK: the newest served restore point of GROUP that has DISK.
        guard let slash = name.firstIndex(of: "/") else { return nil }
        let point = name[..<slash]
        let disk = String(name[name.index(after: slash)...])
        guard let selector = try? RestorePointSelector(parsing: String(point)), case .latest = selector else {
            return nil
        }
        return exports.filter { selector.admits($0.reader.id) && $0.reader.disk.name == disk }
            .max { $0.reader.id.time < $1.reader.id.time }
    }
}
