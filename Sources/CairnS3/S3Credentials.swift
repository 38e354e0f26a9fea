public import CairnCore

/// An S3 access key and its secret. The secret never prints (`description` names the key id only).
public struct S3Credentials: Sendable, CustomStringConvertible {
    public let accessKeyID: String
    public let secretAccessKey: String

    public init(accessKeyID: String, secretAccessKey: String) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
    }

    public var description: String { "S3 access key \(accessKeyID)" }

    /// The credentials the usual way: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, else the
    /// profile `AWS_PROFILE` (default `default`) of the credentials file `AWS_SHARED_CREDENTIALS_FILE`
    /// (default `~/.aws/credentials`), as the AWS command line reads them.
    public static func fromEnvironment(_ environment: [String: String]) throws(CairnError) -> S3Credentials {
        if let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty {
            guard let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
                throw CairnError(.usage, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
            }
            return S3Credentials(accessKeyID: id, secretAccessKey: secret)
        }
        let home = environment["HOME"] ?? "/root"
        let path = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? "\(home)/.aws/credentials"
        let profile = environment["AWS_PROFILE"] ?? "default"
        guard FileSystem.exists(path) else {
            throw CairnError(
                .usage,
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them to \(path)")
        }
        let text = String(decoding: try FileSystem.readAll(path, limit: 1 << 20), as: UTF8.self)
        return try fromCredentialsFile(text, profile: profile, path: path)
    }

    /// The keys of `profile` in the INI text of an AWS credentials file.
    static func fromCredentialsFile(_ text: String, profile: String, path: String) throws(CairnError) -> S3Credentials {
        var section: String?
        var values: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let line = rawLine.trimmingSpaces
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                section = String(line.dropFirst().dropLast()).trimmingSpaces
                continue
            }
            guard section == profile, let equals = line.firstIndex(of: "=") else { continue }
            values[String(line[..<equals]).trimmingSpaces] = String(line[line.index(after: equals)...]).trimmingSpaces
        }
        guard let id = values["aws_access_key_id"], let secret = values["aws_secret_access_key"] else {
            throw CairnError(
                .usage, "\(path) has no aws_access_key_id and aws_secret_access_key in profile [\(profile)]")
        }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret)
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s.removeLast() }
        return String(s)
    }
}
