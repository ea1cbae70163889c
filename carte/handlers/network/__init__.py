"""Networks: bridges, IPAM, veths, nftables rules, network policies and the DNS resolver."""

from carte.handlers.network._handler import NetworkHandler
from carte.handlers.network._records import default_bridge_name, nft_table_name

__all__ = ["NetworkHandler", "default_bridge_name", "nft_table_name"]
