"""The catalogue: plans on sale, their prices, promotion codes and quotes."""
