# syntax=docker/dockerfile:1
# The `tidewater` binary in a small Debian image. Used by docker-compose.yml.
#
#   docker build -t tidewater:local .
#   docker run --rm -v "$PWD/deploy/tidewater.toml:/etc/tidewater/tidewater.toml:ro" tidewater:local config check /etc/tidewater/tidewater.toml

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# librdkafka is built from source (gcc, make, perl and zlib are in the rust image).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tidewater \
    && cp target/release/tidewater /usr/local/bin/tidewater

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tidewater
COPY --from=build /usr/local/bin/tidewater /usr/local/bin/tidewater
# Mount the configuration here (or set TW_CONFIG to another path).
ENV TW_CONFIG=/etc/tidewater/tidewater.toml
USER tidewater
EXPOSE 9464
ENTRYPOINT ["tidewater"]
CMD ["run"]
