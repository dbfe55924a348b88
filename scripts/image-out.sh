#!/bin/sh
# Lays out the files of sidekick's container image (the Dockerfile's runtime
# stage is `FROM scratch`): the Dockerfile's build stage runs it after
# `cargo build`, and it can be run on a Debian 12 host to assemble the same
# tree from a binary built there.
#
#   scripts/image-out.sh target/release/sidekick /out
#
# OUT/rootfs/ becomes the image's / (owned by root):
#   usr/local/bin/sidekick          the binary
#   lib/..., lib64/...              the shared libraries `ldd` lists (glibc's
#                                   libc, libm, the loader, libgcc_s), each at
#                                   the path ldd names, symlinks resolved
#   etc/passwd, etc/group           root, nobody and nonroot (65532)
#   etc/sidekick/sidekick.yaml      the default config, deploy/docker/sidekick.yaml
#   tmp/ (1777), var/lib/
# OUT/data/sidekick/ (0700) becomes data_dir, /var/lib/sidekick, which the
# Dockerfile copies with --chown=65532:65532 (ownership set here would not
# survive every builder's COPY).
#
# No CA bundle: sidekick checks servers against the Mozilla roots built into
# it (webpki-roots); a missing /etc/ssl/certs is not an error. Mount one (or
# set an output's tls.ca_file) to trust a private CA.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 <sidekick binary> <out dir>" >&2
    exit 2
fi
bin=$1
out=$2
repo=$(cd "$(dirname "$0")/.." && pwd)
root=$out/rootfs

install -D -m 0755 "$bin" "$root/usr/local/bin/sidekick"
install -D -m 0644 "$repo/deploy/docker/sidekick.yaml" "$root/etc/sidekick/sidekick.yaml"

# The shared libraries: `ldd` prints `name => /path (addr)` for a library and
# `/path (addr)` for the loader; the vDSO has no file. Anything else (a
# library `not found`, a static binary) stops the build.
libs=$(ldd "$bin")
echo "$libs" | while read -r first arrow path _; do
    case $first in linux-vdso.so.*) continue ;; esac
    if [ "$arrow" != "=>" ]; then
        path=$first
    fi
    case $path in
        /*) install -D -m 0755 "$path" "$root$path" ;;
        *)
            echo "image-out: cannot place '$first $arrow $path' from ldd $bin" >&2
            exit 1
            ;;
    esac
done

mkdir -p "$root/etc"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

install -d -m 1777 "$root/tmp"
install -d -m 0755 "$root/var/lib"
install -d -m 0700 "$out/data/sidekick"
