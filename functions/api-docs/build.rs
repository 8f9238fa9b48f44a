//! Bundles the reference page's files into the binary: each file of `assets/` served under
//! `/docs/` is gzipped here (the binary carries only the compressed bytes), and the page gets
//! a content hash in its asset URLs so a new build is never served from a stale browser cache.
use flate2::Compression;
use flate2::write::GzEncoder;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// (file under `assets/`, name under `/docs/`, Content-Type).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "swagger-ui/swagger-ui-bundle.js",
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
    ),
    ("swagger-ui/swagger-ui.css", "swagger-ui.css", "text/css; charset=utf-8"),
    ("docs.js", "docs.js", "text/javascript; charset=utf-8"),
];

/// FNV-1a, 64 bits: a cache-busting tag, not a security hash.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(hash, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::var("OUT_DIR")?;
    let out = Path::new(&out);
    let mut table = String::from("/// The files served under `/docs/`, gzipped at build time.\n");
    let _ = writeln!(table, "pub static ASSETS: [Asset; {}] = [", ASSETS.len());
    let mut version = 0xcbf2_9ce4_8422_2325_u64;
    for (file, name, content_type) in ASSETS {
        let source = format!("assets/{file}");
        println!("cargo::rerun-if-changed={source}");
        let bytes = std::fs::read(&source)?;
        version = fnv1a(version, &bytes);
        // No file name or time in the gzip header: the same input gives the same bytes.
        let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 3), Compression::best());
        gz.write_all(&bytes)?;
        let gz = gz.finish()?;
        let target = out.join(format!("{name}.gz"));
        std::fs::write(&target, gz)?;
        let _ = writeln!(
            table,
            "    Asset::new({name:?}, {content_type:?}, include_bytes!({:?})),",
            target.display().to_string()
        );
    }
    table.push_str("];\n");
    // The committed OpenAPI document, served at /openapi.json (gzipped: about a tenth of its size).
    let source = "../../openapi.json";
    println!("cargo::rerun-if-changed={source}");
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&std::fs::read(source)?)?;
    let target = out.join("openapi.json.gz");
    std::fs::write(&target, gz.finish()?)?;
    let _ = writeln!(
        table,
        "/// The committed OpenAPI document, gzipped at build time.\npub static OPENAPI: Asset = Asset::new(\"openapi.json\", \"application/json\", include_bytes!({:?}));",
        target.display().to_string()
    );
    // The version of swagger-ui-dist the files came from (assets/README.md says it too).
    println!("cargo::rerun-if-changed=assets/swagger-ui/package.json");
    let package = std::fs::read_to_string("assets/swagger-ui/package.json")?;
    let version_of_ui = package
        .split("\"version\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .ok_or("assets/swagger-ui/package.json has no version")?;
    let _ = writeln!(
        table,
        "/// The version of the npm package `swagger-ui-dist` bundled.\npub const SWAGGER_UI_VERSION: &str = {version_of_ui:?};"
    );
    std::fs::write(out.join("assets.rs"), table)?;

    println!("cargo::rerun-if-changed=assets/docs.html");
    let page = std::fs::read_to_string("assets/docs.html")?.replace("{{version}}", &format!("{version:016x}"));
    std::fs::write(out.join("docs.html"), page)?;
    Ok(())
}
