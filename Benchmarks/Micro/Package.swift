// swift-tools-version: 6.1
import PackageDescription

// Micro-benchmarks of Cairn's hot stages, as a plain executable in its own package so that
// `swift test` at the root never builds it. Run: `swift run -c release --package-path Benchmarks/Micro`.
let package = Package(
    name: "CairnMicro",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(name: "cairn-micro", dependencies: [.product(name: "CairnCore", package: "main")]),
        // Swift 5 mode: a measuring script whose top-level buffers are shared with worker threads
        // by design (read-only while they run).
        .executableTarget(
            name: "cairn-limits", dependencies: [.product(name: "CairnCore", package: "main")],
            swiftSettings: [.swiftLanguageMode(.v5)]),
    ]
)
