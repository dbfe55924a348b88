# syntax=docker/dockerfile:1
#
# sidekick's container image: a release build on Debian 12 (bookworm), copied
# into distroless's `cc` image (glibc and libgcc, no shell, no package
# manager), running as the non-root user 65532 with its data_dir on a volume.
#
#   docker build -t sidekick:0.1.0 .
#   docker run --rm -e OTLP_ENDPOINT=http://collector:4318 \
#     -v app-logs:/var/log/app:ro -v sidekick-data:/var/lib/sidekick sidekick:0.1.0
#
# The runtime image is glibc-based rather than `static`: the binary links
# glibc dynamically (a musl build would fit distroless/static or scratch, at
# the cost of musl's slower allocator on the batching path). The builder and
# runtime are both Debian 12, so the binary's glibc symbols are there.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The manifests and sources of the workspace (.dockerignore keeps target/,
# .git/ and the fuzz crate out of the context).
COPY . .
# Cache mounts keep the registry and the target directory between builds; the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sidekick --bin sidekick \
 && install -D -m 0755 target/release/sidekick /out/usr/local/bin/sidekick \
 && install -d -m 0700 /out/var/lib/sidekick \
 && install -D -m 0644 deploy/docker/sidekick.yaml /out/etc/sidekick/sidekick.yaml

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/sidekick /usr/local/bin/sidekick
COPY --from=build /out/etc/sidekick/sidekick.yaml /etc/sidekick/sidekick.yaml
# data_dir, owned by the runtime user before it becomes a volume, so that a
# new named volume (initialised from it) is writable by sidekick. Copying the
# parent's contents creates `sidekick/` with --chown applied; /var/lib itself
# is left as it is.
COPY --from=build --chown=65532:65532 /out/var/lib/ /var/lib/
USER 65532:65532
VOLUME ["/var/lib/sidekick"]
# 9464: sidekick's own /metrics, /healthz, /readyz (telemetry.listen; the
# default config keeps it on 127.0.0.1 inside the container).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/sidekick"]
CMD ["run", "-c", "/etc/sidekick/sidekick.yaml"]
