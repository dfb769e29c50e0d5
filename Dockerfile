# One image holding the api, worker, weather-stub, console and alerts
# binaries.
# Build stage: compile in release mode with the locked dependencies.
ARG BUILD_RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
FROM rust:${BUILD_RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins -p api -p worker -p weather-stub -p console -p alerts \
 && mkdir -p /out \
 && cp target/release/api target/release/worker target/release/weather-stub target/release/console \
       target/release/alerts /out/

# Runtime stage: a slim Debian, CA certificates for the public weather API,
# curl for health checks, and a user without privileges, who owns the
# console's data directory (a named volume mounted there starts with its
# owner).
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/console && chown app /var/lib/console
COPY --from=build /out/ /usr/local/bin/
USER app
ENV LOG_FORMAT=json
CMD ["api"]
