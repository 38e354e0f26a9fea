import CairnTestSupport
import Foundation
import Testing

@testable import CairnCore

/// Key files: the master key wrapped under a passphrase (docs/FORMAT.md, "Key files").
@Suite struct KeyFileTests {
    /// `openssl ARGS` with `input` on stdin; its output with colons removed, lower-cased.
    func openssl(_ arguments: [String], input: [UInt8] = []) -> String {
        let outcome = Subprocess.run("openssl", arguments, stdin: Data(input))
        #expect(outcome.status == 0, "openssl \(arguments): \(outcome.stderr)")
        return outcome.stdout.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: ":", with: "")
            .lowercased()
    }

    @Test func theDerivedKeysMatchOpenSSLsHKDF() {
        let repositoryID = Hex.decode("00112233445566778899aabbccddeeff")!
        let master = SecretKey(bytes: Array(1...32))
        let keys = MasterKey(master: master, repositoryID: repositoryID)
        for (purpose, key) in [
            ("cairn/v1/id", keys.idKey), ("cairn/v1/data", keys.dataKey), ("cairn/v1/meta", keys.metaKey),
        ] {
            let theirs = openssl([
                "kdf", "-keylen", "32", "-kdfopt", "digest:SHA256", "-kdfopt", "hexkey:\(Hex.encode(master.bytes))",
                "-kdfopt", "hexsalt:\(Hex.encode(repositoryID))", "-kdfopt", "info:\(purpose)", "HKDF",
            ])
            #expect(Hex.encode(key.bytes) == theirs, "\(purpose)")
        }
        let fingerprint = openssl(
            ["mac", "-digest", "SHA256", "-macopt", "hexkey:\(Hex.encode(keys.metaKey.bytes))", "HMAC"],
            input: Array("cairn key fingerprint".utf8))
        #expect(keys.fingerprintHex == String(fingerprint.prefix(32)))
    }

    static let repositoryID = "00112233445566778899aabbccddeeff"
    static let cheap = ScryptParameters(n: 1 << 10, r: 8, p: 1)

    func wrapped(_ passphrase: String = "correct horse") throws -> (MasterKey, KeyFile) {
        let master = MasterKey.generate(repositoryID: Hex.decode(Self.repositoryID)!)
        let file = try KeyFile.wrap(
            master, repositoryID: Self.repositoryID, passphrase: Array(passphrase.utf8), parameters: Self.cheap,
            hint: "test")
        return (master, file)
    }

    @Test func theRightPassphraseOpensAndAWrongOneDoesNot() throws {
        let (master, file) = try wrapped()
        let opened = try #require(try file.unwrap(Array("correct horse".utf8)))
        #expect(opened.master.matches(master.master) && opened.idKey.matches(master.idKey))
        #expect(try file.unwrap(Array("correct horsf".utf8)) == nil)
        let parsed = try KeyFile.parse(try file.fileBytes(), name: "keys/x")
        #expect(parsed == file)
        #expect(try file.associatedData().count == 100)
    }

    /// A field that decides how the key is opened cannot be changed without the seal noticing.
    @Test(arguments: ["repository", "id", "n", "salt", "nonce", "wrapped", "fingerprint"])
    func anAlteredFieldDoesNotOpen(field: String) throws {
        var (_, file) = try wrapped()
        func flip(_ hex: String) -> String { (hex.first == "0" ? "1" : "0") + hex.dropFirst() }
        switch field {
        case "repository": file.repository = flip(file.repository)
        case "id": file.id = flip(file.id)
        case "n": file.kdf.n = 1 << 11
        case "salt": file.kdf.salt = flip(file.kdf.salt)
        case "nonce": file.nonce = flip(file.nonce)
        case "wrapped": file.wrapped = flip(file.wrapped)
        default: file.fingerprint = flip(file.fingerprint)
        }
        #expect(try file.unwrap(Array("correct horse".utf8)) == nil)
    }

    /// docs/FORMAT.md's worked example ("Key files"), computed independently with Python's
    /// `cryptography` package when it was written: the same inputs give the same bytes here.
    @Test func theWorkedExampleInFormatMD() throws {
        let repositoryID = "00112233445566778899aabbccddeeff"
        let master = MasterKey(master: SecretKey(bytes: Array(0..<32)), repositoryID: Hex.decode(repositoryID)!)
        #expect(Hex.encode(master.idKey.bytes) == "747eace3dce6d2b08af87e74e5e6f8fdf10fc3d5c0e76e7d8602fd87136680e3")
        #expect(Hex.encode(master.dataKey.bytes) == "eab165c5dce207daa274ae7791a45b76454bd24015749ff29268ed6175ec823d")
        #expect(Hex.encode(master.metaKey.bytes) == "8ead7e6dcf9f49759e4839fa316745f40a2f9fe612b0528285e6c320f22f68ce")
        #expect(master.fingerprintHex == "cbe74de8e09112cee39149cd9c1185e4")
        let file = try KeyFile.wrap(
            master, repositoryID: repositoryID, passphrase: Array("correct horse battery staple".utf8),
            salt: Array(0x20..<0x40), nonce: Array(0x40..<0x4c), id: Hex.decode("0123456789abcdef")!)
        #expect(
            Hex.encode(try file.associatedData())
                == "636169726e2d6b65792d763100112233445566778899aabbccddeeff0123456789abcdef000002000000000008000000010000"
                + "00202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fcbe74de8e09112cee39149cd9c1185e4")
        #expect(
            file.wrapped
                == "b4513a06ab219535b885873cfdf0b3babe531220dcb5bf942432571ab4c36ab8c7f8e155465b5d5a2ba738b3f46130bf")
    }

    /// A host key's file: its key-encrypting key is OpenSSL's HKDF of the secret (no scrypt), it
    /// opens only with that secret, never with a passphrase, and its fields are bound as a
    /// passphrase file's are (the worked example in docs/FORMAT.md, "Host keys").
    @Test func aHostKeyFileOpensWithItsSecretOnlyAndMatchesOpenSSL() throws {
        let repositoryID = "00112233445566778899aabbccddeeff"
        let master = MasterKey(master: SecretKey(bytes: Array(0..<32)), repositoryID: Hex.decode(repositoryID)!)
        let secret = SecretKey(bytes: Array(0x60..<0x80))
        let file = try KeyFile.wrap(
            master, repositoryID: repositoryID, hostSecret: secret, salt: Array(0x20..<0x40),
            nonce: Array(0x40..<0x4c), id: Hex.decode("0123456789abcdef")!)
        #expect(file.isHostKey && file.kdf.name == "hkdf-sha256" && file.kdf.n == 0)
        let kek = openssl([
            "kdf", "-keylen", "32", "-kdfopt", "digest:SHA256", "-kdfopt", "hexkey:\(Hex.encode(secret.bytes))",
            "-kdfopt", "hexsalt:\(file.kdf.salt)", "-kdfopt", "info:cairn/v1/host-key", "HKDF",
        ])
        #expect(kek == "\(Self.hostWorkedExample.kek)")
        #expect(file.wrapped == Self.hostWorkedExample.wrapped)
        let opened = try #require(try file.unwrap(hostSecret: secret))
        #expect(opened.master.matches(master.master))
        #expect(try file.unwrap(hostSecret: SecretKey(bytes: Array(0x61..<0x81))) == nil)
        #expect(try file.unwrap(Array(0x60..<0x80)) == nil, "a passphrase never opens a host key's file")
        let parsed = try KeyFile.parse(try file.fileBytes(), name: "keys/x")
        #expect(parsed == file)
        var stretched = file
        stretched.kdf.n = 1024
        #expect(throws: CairnError.self) { try KeyFile.parse(try stretched.fileBytes(), name: "keys/x") }
        var flipped = file
        flipped.id = "1123456789abcdef"
        #expect(try flipped.unwrap(hostSecret: secret) == nil, "the key id is bound")
    }

    /// Computed with OpenSSL's `kdf HKDF` (the KEK) and Python's `cryptography` AESGCM (the seal).
    static let hostWorkedExample = (
        kek: "f3909c7c1dd3e1afa7689561ab2cfd7a5772469eee9bbf9a5e9d89a72d437bed",
        wrapped: "c2af4e5b49209b1d1aff9736cb11198bc2e2239cc7312c4731b93fbb518def5df1f8ed0f7be5c4862c4d2aa1dc96b2a1"
    )

    /// The host's own file: written 0600 and create-only, read back, refused when others can
    /// read it or when it is not a host key.
    @Test func aHostKeyFileOnTheHostIsPrivate() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("host.key")
        let host = HostKey.make(repository: "00112233445566778899aabbccddeeff", keyID: "0123456789abcdef")
        try host.write(to: path)
        let back = try HostKey.read(path)
        #expect(back.keyID == host.keyID && back.repository == host.repository && back.secret.matches(host.secret))
        #expect(throws: CairnError.self) { try host.write(to: path) }
        chmod(path, 0o640)
        #expect {
            try HostKey.read(path)
        } throws: { error in
            (error as? CairnError)?.message.contains("readable by others") == true
        }
        try "{\"format\": \"cairn-key\"}".write(toFile: dir.file("other"), atomically: true, encoding: .utf8)
        chmod(dir.file("other"), 0o600)
        #expect(throws: CairnError.self) { try HostKey.read(dir.file("other")) }
    }

    @Test func hostileOrTruncatedFilesAreRefusedByName() throws {
        let (_, file) = try wrapped()
        let bytes = try file.fileBytes()
        #expect(throws: CairnError.self) { try KeyFile.parse(Array(bytes.prefix(bytes.count / 2)), name: "keys/a") }
        var greedy = file
        greedy.kdf.n = 1 << 30
        do throws(CairnError) {
            _ = try KeyFile.parse(try greedy.fileBytes(), name: "keys/b")
            Issue.record("a key file asking for 2^30 scrypt rounds was accepted")
        } catch {
            #expect(error.code == .damaged && error.message.contains("keys/b"), "\(error)")
        }
        var other = file
        other.cipher = "rot13"
        #expect(throws: CairnError.self) { try KeyFile.parse(try other.fileBytes(), name: "keys/c") }
    }

    /// A field given twice (found by the keyfile fuzz target): the format check once read one
    /// copy and the decoder the other, so a file passed as `cairn-key` and was written back as
    /// something its own parse refused. Whichever copy the decoder keeps, the file must be
    /// refused or come back unchanged once written.
    @Test(arguments: [
        (#""format" : "cairn-key","#, #""format" : "cairn-kex","#),
        (#""format" : "cairn-kex","#, #""format" : "cairn-key","#),
        (#""version" : 1,"#, #""version" : 2,"#),
        (#""version" : 2,"#, #""version" : 1,"#),
    ])
    func aFieldGivenTwiceIsRefusedOrRoundTrips(first: String, second: String) throws {
        let (_, file) = try wrapped()
        let text = String(decoding: try file.fileBytes(), as: UTF8.self)
        let field = String(first.prefix(while: { $0 != ":" }))
        let kept = text.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains(field) }
        let doubled = ["{", "  " + first, "  " + second] + kept.dropFirst().map(String.init)
        let bytes = Array(doubled.joined(separator: "\n").utf8)
        do throws(CairnError) {
            let parsed = try KeyFile.parse(bytes, name: "keys/twice")
            #expect(parsed.format == KeyFile.formatName && parsed.version == KeyFile.currentVersion)
            #expect(try KeyFile.parse(try parsed.fileBytes(), name: "keys/again") == parsed)
        } catch {
            #expect(error.code == .damaged || error.code == .repository, "\(error)")
            #expect(error.message.contains("keys/twice"), "\(error)")
        }
    }

    @Test func aPaperKeyReadsBackAndNamesAMistypedLine() throws {
        let (_, file) = try wrapped()
        let text = PaperKey.text(of: file)
        let back = try PaperKey.parse(text, created: file.created)
        var expected = file
        expected.hint = "paper"
        #expect(back == expected)
        #expect(try back.unwrap(Array("correct horse".utf8)) != nil)
        // Lower case and extra spaces are fine; one changed character is not.
        #expect(
            try PaperKey.parse(text.lowercased().replacingOccurrences(of: "  ", with: "   "), created: "").id == file.id
        )
        var lines = text.components(separatedBy: "\n")
        let index = try #require(lines.firstIndex { $0.hasPrefix("03  ") })
        var chars = Array(lines[index])
        chars[4] = chars[4] == "A" ? "B" : "A"
        lines[index] = String(chars)
        do throws(CairnError) {
            _ = try PaperKey.parse(lines.joined(separator: "\n"), created: "")
            Issue.record("a mistyped paper key was accepted")
        } catch {
            #expect(error.message.contains("line 03"), "\(error)")
        }
    }
}
