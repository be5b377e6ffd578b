//! A build context as the Engine API takes it: the directory's files in a
//! tar archive, leaving out what its `.dockerignore` names, as `docker
//! build` does.
//!
//! `.dockerignore` is read as the docker CLI reads it: one pattern a line,
//! `#` comments, paths relative to the context (a leading `/` or `./` is
//! the same), `*` and `?` within one path segment, `**` across any number
//! of them, a pattern that names a directory leaves out all under it, and
//! `!pattern` takes back what an earlier line left out (the last matching
//! line wins). The Dockerfile and `.dockerignore` itself are always sent,
//! since the engine needs the one and the CLI sends the other.
//!
//! The archive is plain ustar, with GNU long-name entries for paths over
//! 100 bytes; regular files, directories and symbolic links (sent as links,
//! never followed). Ownership is left at 0: the Dockerfile's `COPY --chown`
//! decides it, as with `docker build`.

use std::io;
use std::path::{Path, PathBuf};

/// One line of a `.dockerignore`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    /// The pattern's segments.
    segments: Vec<String>,
    /// `!`: takes back.
    include: bool,
}

/// The rules of a `.dockerignore`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Reads the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (include, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let segments: Vec<String> = pattern
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (!segments.is_empty()).then_some(Rule { segments, include })
            })
            .collect();
        Ignore { rules }
    }

    /// Whether a path (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut out = false;
        for rule in &self.rules {
            // The path itself, or a directory above it.
            let hit = (1..=parts.len()).any(|n| segments_match(&rule.segments, &parts[..n]));
            if hit {
                out = !rule.include;
            }
        }
        out
    }

    /// Whether any rule takes something back (then an excluded directory
    /// must still be walked).
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.include)
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => glob(first.as_bytes(), p.as_bytes()) && segments_match(rest, prest),
            None => false,
        },
    }
}

/// `*` and `?` within one segment; `\` escapes the next character.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == rest.first() && glob(&rest[1..], &text[1..])
        }
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// The archive of a context directory, its `.dockerignore` applied;
/// `dockerfile` is the Dockerfile's path relative to it (always sent).
pub fn context_tar(dir: &Path, dockerfile: &str) -> io::Result<Vec<u8>> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(e),
    };
    let keep_always: Vec<String> = [dockerfile, ".dockerignore"]
        .iter()
        .map(|p| p.trim_start_matches("./").to_owned())
        .collect();
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir.join(&rel))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let path = rel.join(entry.file_name());
            let name = path.to_string_lossy().replace('\\', "/");
            let meta = std::fs::symlink_metadata(entry.path())?;
            let excluded = ignore.excludes(&name) && !keep_always.contains(&name);
            if meta.is_dir() {
                if !excluded {
                    append(&mut out, &format!("{name}/"), b'5', &meta, &[], "")?;
                }
                if !excluded || ignore.has_exceptions() {
                    stack.push(path);
                }
            } else if excluded {
                continue;
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path())?;
                append(&mut out, &name, b'2', &meta, &[], &target.to_string_lossy())?;
            } else if meta.is_file() {
                let data = std::fs::read(entry.path())?;
                append(&mut out, &name, b'0', &meta, &data, "")?;
            }
            // Sockets, fifos and devices are not part of a build.
        }
    }
    // Two empty blocks end the archive.
    out.extend_from_slice(&[0u8; 1024]);
    Ok(out)
}

fn append(
    out: &mut Vec<u8>,
    name: &str,
    kind: u8,
    meta: &std::fs::Metadata,
    data: &[u8],
    link: &str,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    if name.len() > 100 {
        // GNU long name: an entry `././@LongLink` whose data is the name.
        let mut long = name.as_bytes().to_vec();
        long.push(0);
        block(out, "././@LongLink", b'L', 0o644, 0, &long, "")?;
    }
    if link.len() > 100 {
        let mut long = link.as_bytes().to_vec();
        long.push(0);
        block(out, "././@LongLink", b'K', 0o644, 0, &long, "")?;
    }
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    block(out, name, kind, meta.mode() & 0o7777, mtime, data, link)
}

fn block(
    out: &mut Vec<u8>,
    name: &str,
    kind: u8,
    mode: u32,
    mtime: u64,
    data: &[u8],
    link: &str,
) -> io::Result<()> {
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, bytes: &[u8]| {
        let n = bytes.len().min(len);
        h[at..at + n].copy_from_slice(&bytes[..n]);
    };
    let octal = |value: u64, width: usize| format!("{value:0w$o}\0", w = width - 1);
    put(&mut h, 0, 100, name.as_bytes());
    put(&mut h, 100, 8, octal(u64::from(mode), 8).as_bytes());
    put(&mut h, 108, 8, octal(0, 8).as_bytes());
    put(&mut h, 116, 8, octal(0, 8).as_bytes());
    let size = u64::try_from(data.len()).map_err(io::Error::other)?;
    if size >= 0o77_777_777_777 {
        return Err(io::Error::other(format!(
            "`{name}` is too large for the build context (8 GiB at most)"
        )));
    }
    put(&mut h, 124, 12, octal(size, 12).as_bytes());
    put(
        &mut h,
        136,
        12,
        octal(mtime.min(0o77_777_777_777), 12).as_bytes(),
    );
    h[148..156].fill(b' ');
    h[156] = kind;
    put(&mut h, 157, 100, link.as_bytes());
    put(&mut h, 257, 6, b"ustar\0");
    put(&mut h, 263, 2, b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.resize(out.len() + pad, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns_match_as_docker_reads_them() {
        let ig = Ignore::parse(
            "# build output\ntarget\n/node_modules/\n*.log\n!keep.log\ndocs/**/*.md\n./secret?.txt\n",
        );
        assert!(ig.excludes("target"));
        assert!(
            ig.excludes("target/debug/app"),
            "a directory takes its contents"
        );
        assert!(ig.excludes("node_modules/x/index.js"));
        assert!(ig.excludes("app.log"));
        assert!(!ig.excludes("keep.log"), "taken back by `!`");
        assert!(!ig.excludes("logs/app.log"), "`*` stays within one segment");
        assert!(ig.excludes("docs/a/b/c.md") && ig.excludes("docs/c.md"));
        assert!(!ig.excludes("docs/c.txt"));
        assert!(ig.excludes("secret1.txt") && !ig.excludes("secret12.txt"));
        assert!(!ig.excludes("src/main.rs"));
        assert!(!Ignore::parse("").excludes("anything"));
    }

    /// The entries of an archive: (name, type, data), GNU long names joined.
    fn entries(tar: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        let mut long: Option<String> = None;
        while at + 512 <= tar.len() && tar[at] != 0 {
            let h = &tar[at..at + 512];
            let field = |a: usize, b: usize| {
                String::from_utf8_lossy(&h[a..b])
                    .trim_end_matches('\0')
                    .to_owned()
            };
            let size = usize::from_str_radix(field(124, 135).trim(), 8).unwrap();
            let sum = u32::from_str_radix(field(148, 154).trim(), 8).unwrap();
            let mut copy = h.to_vec();
            copy[148..156].fill(b' ');
            assert_eq!(
                sum,
                copy.iter().map(|b| u32::from(*b)).sum::<u32>(),
                "checksum"
            );
            let data = tar[at + 512..at + 512 + size].to_vec();
            at += 512 + size.div_ceil(512) * 512;
            if h[156] == b'L' {
                long = Some(
                    String::from_utf8_lossy(&data)
                        .trim_end_matches('\0')
                        .to_owned(),
                );
                continue;
            }
            out.push((long.take().unwrap_or_else(|| field(0, 100)), h[156], data));
        }
        assert_eq!(
            &tar[tar.len() - 1024..],
            &[0u8; 1024][..],
            "ends with two zero blocks"
        );
        out
    }

    #[test]
    fn the_context_leaves_out_what_dockerignore_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(p.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(p.join(".dockerignore"), "Dockerfile\ntarget\n*.secret\n").unwrap();
        std::fs::create_dir_all(p.join("target/debug")).unwrap();
        std::fs::write(p.join("target/debug/big"), vec![7u8; 5000]).unwrap();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::write(p.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(p.join("db.secret"), "hunter2").unwrap();
        let deep = "d".repeat(60);
        std::fs::create_dir_all(p.join(&deep)).unwrap();
        std::fs::write(p.join(&deep).join("f".repeat(60)), "long").unwrap();
        std::os::unix::fs::symlink("src/main.rs", p.join("link")).unwrap();
        let tar = context_tar(p, "Dockerfile").unwrap();
        let got = entries(&tar);
        let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
        assert!(names.contains(&"Dockerfile"), "always sent: {names:?}");
        assert!(names.contains(&".dockerignore"), "{names:?}");
        assert!(
            names.contains(&"src/") && names.contains(&"src/main.rs"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| n.starts_with("target")), "{names:?}");
        assert!(!names.contains(&"db.secret"), "{names:?}");
        let long = format!("{deep}/{}", "f".repeat(60));
        let (_, _, data) = got.iter().find(|(n, _, _)| *n == long).unwrap();
        assert_eq!(data, b"long");
        let (_, kind, _) = got.iter().find(|(n, _, _)| n == "link").unwrap();
        assert_eq!(*kind, b'2', "a link stays a link");
    }
}
