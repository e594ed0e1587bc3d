# elastic-cart image: build with cargo, run as a non-root user on a slim Debian.
# Base images are build arguments so machines without a registry can use local ones.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first: this layer is rebuilt only when a manifest or Cargo.lock changes.
# The workspace's other members (the test kit, the xtask) are only named by the manifest:
# their manifests come along, with placeholder sources, and nothing of them is built.
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/
COPY xtask/Cargo.toml xtask/
# (The manifest names a benchmark target, so a placeholder for it too.)
RUN mkdir -p src benches/fleet testkit/src/bin xtask/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/fleet/main.rs \
    && touch testkit/src/lib.rs && echo 'fn main() {}' > testkit/src/bin/fleet-scenario.rs \
    && echo 'fn main() {}' > xtask/src/main.rs \
    && cargo build --profile dist --locked --package elastic-cart \
    && rm -rf src
COPY src src
COPY templates templates
# Make cargo see the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --profile dist --locked --package elastic-cart

FROM ${RUNTIME_IMAGE}
# The version each replica shows on its pages and in /healthz (empty: the crate's), so a
# rolling update can be watched: docker build --build-arg APP_VERSION=1.4.0 .
ARG APP_VERSION=
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=build /src/target/dist/elastic-cart /usr/local/bin/elastic-cart
COPY static static
USER app
ENV LISTEN_ADDR=0.0.0.0:3000 STATIC_DIR=/app/static APP_VERSION=${APP_VERSION}
LABEL org.opencontainers.image.version=${APP_VERSION}
EXPOSE 3000
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["elastic-cart", "healthcheck"]
ENTRYPOINT ["elastic-cart"]
