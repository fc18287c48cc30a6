# The node image, for serving nodes and the updater node alike (the task sets NODEFLEET_ROLE),
# so a snapshot is made by the very client build the serving nodes run: the execution
# client's official image with the nodefleet agent added as the entrypoint. The agent
# hydrates the data dir from the newest published snapshot, starts the client
# (`nodefleet agent run ... -- <client arguments>`), serves /health on 8580 and, on the
# updater node, takes the snapshot updater's commands.
#
# Build from the repository root (infra/README.md, "Images"):
#
#   docker build -f infra/images/node.Dockerfile \
#     --build-arg CLIENT_IMAGE=ethereum/client-go:v1.16.7 -t nodefleet-geth .
#
# CLIENT_IMAGE is a client's official image: ethereum/client-go (geth), ghcr.io/paradigmxyz/reth,
# erigontech/erigon, nethermind/nethermind, hyperledger/besu. The agent runs the client's
# executable from PATH (geth, reth, erigon, nethermind, besu); for an image that keeps it
# elsewhere, add `--client-bin /path` to the task's command.
ARG CLIENT_IMAGE=ethereum/client-go:v1.16.7

# A static (musl) agent, so it runs on any client image's libc: geth's is Alpine, reth's
# Debian, besu's and nethermind's Ubuntu.
FROM rust:1.95-alpine AS agent
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p nodefleet \
 && strip target/release/nodefleet

FROM ${CLIENT_IMAGE}
COPY --from=agent /src/target/release/nodefleet /usr/local/bin/nodefleet
# /health (the load balancer's check), the client's JSON-RPC, peer-to-peer.
EXPOSE 8580 8545 30303 30303/udp
# ECS's stop signal reaches the agent, which stops the client the graceful way within the
# instances' ECS_CONTAINER_STOP_TIMEOUT (300 s in infra/template.yaml).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nodefleet", "agent", "run"]
