// swift-tools-version: 6.1
import PackageDescription

// Coverage-guided fuzz targets for Cairn's parsers of untrusted bytes (libFuzzer), in their own
// package so that `swift test` at the root never builds them. One executable per target, named
// `fuzz-TARGET`, one source file each; ../README.md says how to build, run and add one.
// Build through ../run.sh: it passes `-sanitize=fuzzer,address` to every module, CairnCore
// included, so coverage reaches the parsers themselves.

/// The fuzz targets: `Sources/fuzz-NAME/` holds one file. Add a name here to add a target.
let targets = [
    "qcow2", "pack", "index-segment", "index-tree", "manifest", "config", "archive", "vmdk", "nbd-client",
    "nbd-server", "keyfile", "s3-xml", "condemned-list",
]
/// Targets that also need the NBD server module (swift-nio); the others link CairnCore only.
let serveTargets: Set = ["nbd-server"]

// The root package's identity is its directory's name (`main`, `fuzz`, a CI checkout's name...).
let root = Context.packageDirectory.split(separator: "/").dropLast(2).last.map(String.init) ?? "cairn"

let package = Package(
    name: "CairnFuzz",
    dependencies: [.package(path: "../..")],
    targets: [
        .target(name: "CLibFuzzer"),
        .target(
            name: "FuzzSupport",
            dependencies: ["CLibFuzzer", .product(name: "CairnCore", package: root.lowercased())]
        ),
    ]
        + targets.map { name in
            .executableTarget(
                name: "fuzz-\(name)",
                dependencies: ["FuzzSupport", .product(name: "CairnCore", package: root.lowercased())]
                    + (serveTargets.contains(name) ? [.product(name: "CairnServe", package: root.lowercased())] : []),
                // gold cannot link libFuzzer into a SwiftPM executable (it fails on the `main`
                // alias SwiftPM adds); lld, shipped with the toolchain, can.
                linkerSettings: [.unsafeFlags(["-use-ld=lld"])]
            )
        }
)
