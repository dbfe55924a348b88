# syntax=docker/dockerfile:1
#
# sidekick's container image: a release build on Debian 12 (bookworm), copied
# with the few files it needs into an empty (`scratch`) image: the binary,
# the glibc and libgcc libraries it links, /etc/passwd and /etc/group, the
# default config, /tmp. No shell, no package manager. It runs as the non-root
# user 65532 with its data_dir on a volume.
#
#   docker build -t sidekick:0.1.0 .
#   docker run --rm -e OTLP_ENDPOINT=http://collector:4318 \
#     -v app-logs:/var/log/app:ro -v sidekick-data:/var/lib/sidekick sidekick:0.1.0
#
# The binary links glibc dynamically (a musl build would need no libraries,
# at the cost of musl's slower allocator on the batching path), so
# scripts/image-out.sh copies the libraries `ldd` lists from the build stage:
# builder and runtime are the same Debian 12 glibc. There is no CA bundle:
# sidekick has the Mozilla roots built in (mount /etc/ssl/certs or set an
# output's tls.ca_file for a private CA).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The manifests and sources of the workspace (.dockerignore keeps target/,
# .git/ and the fuzz crate out of the context).
COPY . .
# Cache mounts keep the registry and the target directory between builds; the
# image's files are laid out in /out from the cached target directory in the
# same step (/out/rootfs: the image's /, /out/data: data_dir).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sidekick --bin sidekick \
 && sh scripts/image-out.sh target/release/sidekick /out

FROM scratch
COPY --from=build /out/rootfs/ /
# data_dir, owned by the runtime user before it becomes a volume, so that a
# new named volume (initialised from it) is writable by sidekick. Copying the
# parent's contents creates `sidekick/` with --chown applied; /var/lib itself
# (from rootfs, owned by root) is left as it is.
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/
# `scratch` sets no PATH: this one lets `kubectl exec ... -- sidekick status`
# find the binary.
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
VOLUME ["/var/lib/sidekick"]
# 9464: sidekick's own /metrics, /healthz, /readyz (telemetry.listen; the
# default config keeps it on 127.0.0.1 inside the container).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/sidekick"]
CMD ["run", "-c", "/etc/sidekick/sidekick.yaml"]
