# PRISM in a container: Debian with Chromium from apt, run as a non-root
# user under tini (Chromium's children are reaped when it dies).
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t prism .
#   docker run -p 4000:4000 -v prism-data:/var/lib/prism/data \
#     -v "$PWD/prism.toml:/etc/prism/prism.toml:ro" prism
#
# Relative paths in the config (cache.dir = "data/cache", recache.journal_dir
# = "data/recache") land in the volume: the working directory is
# /var/lib/prism.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/prism .

FROM debian:bookworm-slim
# curl is for the HEALTHCHECK; fonts so that pages render text as a browser would.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium tini ca-certificates curl fonts-liberation fonts-noto-color-emoji \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --uid 10001 --home-dir /var/lib/prism --create-home --shell /usr/sbin/nologin prism \
    && mkdir -p /var/lib/prism/data /etc/prism \
    && chown prism:prism /var/lib/prism/data
COPY --from=build /out/prism /usr/local/bin/prism
COPY prism.example.toml /etc/prism/prism.toml
USER prism
WORKDIR /var/lib/prism
ENV HOME=/var/lib/prism
VOLUME ["/var/lib/prism/data"]
# 4000: public port. The admin port (admin.address, 127.0.0.1:4001 in the
# example config) stays inside unless the config listens on 0.0.0.0 with
# admin.bearer_token set.
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:4001/health"]
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/prism"]
CMD ["serve", "-config", "/etc/prism/prism.toml"]
