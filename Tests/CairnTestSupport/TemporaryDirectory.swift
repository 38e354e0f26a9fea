import CairnCore
import Foundation

/// A fresh directory under /tmp (or `parent`), removed when the object goes away.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "cairn-test", in parent: String = "/tmp") {
        var template = Array("\(parent)/\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        path = String(cString: template.map { UInt8(bitPattern: $0) }.dropLast() + [0])
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }

    /// Copies `source` (a file or folder) into this directory under `name`.
    public func copy(_ source: String, as name: String) throws -> String {
        let target = file(name)
        try FileManager.default.copyItem(atPath: source, toPath: target)
        return target
    }
}
