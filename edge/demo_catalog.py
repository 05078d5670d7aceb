"""The demo store's assortment: product lines of a general store, by zone (pure data).

A "line" is one product sold in several variants (colours, scents, shades): the generator
in ``edge.demo_store`` turns each into a few catalog items with readable names such as
"Merino crew-neck sweater, navy"; the variants of one base share a style id
(``style_id_of``), as a retail catalog's SKUs share their style, so the edge suggests the
sweater once and names its colours. ``rebuy`` is how likely a buyer buys the same item again
(coffee and day cream high, a winter coat low): it shapes the members' repeat purchases,
which is what the ranking model feeds on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

ZONES: Final = ("entrance", "womenswear", "menswear", "shoes", "home", "beauty", "grocery",
                "checkout")
# Zones a member can "shop" (entrance and checkout are on everyone's way).
DEPARTMENTS: Final = ("womenswear", "menswear", "shoes", "home", "beauty", "grocery")
APPAREL_SIZES: Final = ("XS", "S", "M", "L", "XL")
SHOE_SIZES: Final = ("37", "38", "39", "40", "41", "42", "43", "44", "45")

_COLOURS = ("navy", "oatmeal", "charcoal", "forest green", "camel", "ecru", "burgundy", "black")
_DENIM = ("indigo", "washed black", "light wash", "mid blue")


@dataclass(frozen=True)
class ProductLine:
    category: str
    zone: str
    bases: tuple[str, ...]
    variants: tuple[str, ...]  # empty: one item per base
    price: tuple[float, float]
    brands: tuple[str, ...]
    rebuy: float  # 0..1
    sized: str | None = None  # "apparel" | "shoes": the member has a size for this category


LINES: Final[tuple[ProductLine, ...]] = (
    ProductLine("accessories", "entrance",
                ("Wool beanie", "Cashmere-blend scarf", "Touchscreen gloves", "Compact umbrella"),
                ("grey", "navy", "mustard"), (15, 69), ("Northlane", "Fjordwear"), 0.1),
    ProductLine("gifts", "entrance",
                ("Candle & diffuser gift box", "Travel-size skincare set", "Chocolate gift tin",
                 "Linen napkins, set of 4"), (), (12, 39), ("Casa Verde", "Botanica"), 0.2),
    ProductLine("womens-knitwear", "womenswear",
                ("Merino crew-neck sweater", "Cashmere-blend cardigan", "Cable-knit jumper",
                 "Ribbed roll-neck"), _COLOURS, (39, 129), ("Atelier Rue", "Northlane"), 0.1,
                "apparel"),
    ProductLine("dresses", "womenswear",
                ("Linen midi dress", "Jersey wrap dress", "Printed shirt dress"),
                ("sage", "black", "terracotta", "floral"), (45, 99),
                ("Atelier Rue", "Linen & Loom"), 0.05, "apparel"),
    ProductLine("womens-trousers", "womenswear",
                ("High-rise straight jeans", "Wide-leg linen trousers",
                 "Tailored cigarette trousers"), _DENIM, (39, 89),
                ("Atelier Rue", "Denim Works"), 0.1, "apparel"),
    ProductLine("womens-tops", "womenswear",
                ("Organic cotton T-shirt", "Silk-blend blouse", "Striped Breton top"),
                ("white", "black", "navy stripe", "blush"), (15, 69),
                ("Linen & Loom", "Atelier Rue"), 0.3, "apparel"),
    ProductLine("mens-trousers", "menswear",
                ("Slim-fit chinos", "Straight-leg selvedge jeans", "Relaxed corduroy trousers"),
                ("stone", "navy", "olive", "indigo"), (39, 99), ("Denim Works", "Northlane"),
                0.15, "apparel"),
    ProductLine("mens-shirts", "menswear",
                ("Oxford button-down shirt", "Brushed flannel shirt",
                 "Linen camp-collar shirt"), ("white", "light blue", "check", "sand"),
                (29, 69), ("Northlane", "Fjordwear"), 0.25, "apparel"),
    ProductLine("mens-knitwear", "menswear",
                ("Lambswool V-neck", "Shawl-collar cardigan", "Merino quarter-zip"),
                _COLOURS, (45, 119), ("Fjordwear", "Northlane"), 0.1, "apparel"),
    ProductLine("outerwear", "menswear",
                ("Waxed cotton jacket", "Quilted gilet", "Wool-blend overcoat"),
                ("olive", "navy", "black"), (79, 229), ("Fjordwear",), 0.02, "apparel"),
    ProductLine("footwear", "shoes",
                ("Leather Chelsea boots", "White leather trainers", "Suede loafers",
                 "Canvas plimsolls"), ("black", "tan", "white"), (35, 149),
                ("Strider", "Northlane"), 0.05, "shoes"),
    ProductLine("socks", "shoes",
                ("Merino hiking socks, 2 pairs", "Bamboo ankle socks, 3 pairs"),
                ("grey", "black", "mixed"), (9, 19), ("Strider",), 0.6),
    ProductLine("bedding", "home",
                ("Stonewashed linen duvet cover", "Percale pillowcase pair", "Waffle throw"),
                ("white", "sage", "clay"), (29, 149), ("Hearthstone", "Casa Verde"), 0.05),
    ProductLine("kitchen", "home",
                ("Stoneware mug", "Cast-iron skillet 26 cm", "Oak chopping board",
                 "Glass storage jar 1 l", "Linen tea towel"), (), (8, 69),
                ("Hearthstone", "Casa Verde"), 0.15),
    ProductLine("candles", "home",
                ("Scented candle", "Reed diffuser 100 ml"),
                ("fig & cedar", "sea salt", "amber", "lavender"), (12, 29),
                ("Casa Verde", "Lumen"), 0.5),
    ProductLine("bath", "home", ("Organic cotton bath towel", "Waffle hand towel"),
                ("white", "stone", "ink"), (9, 39), ("Hearthstone",), 0.2),
    ProductLine("skincare", "beauty",
                ("Hydrating day cream 50 ml", "Vitamin C serum 30 ml",
                 "Gentle foaming cleanser 150 ml", "SPF 50 sun fluid 50 ml",
                 "Overnight repair mask 75 ml"), (), (12, 45), ("Botanica", "Lumière"), 0.8),
    ProductLine("haircare", "beauty",
                ("Argan oil shampoo 250 ml", "Repair conditioner 250 ml",
                 "Sea-salt texturising spray"), (), (7, 16), ("Botanica",), 0.75),
    ProductLine("fragrance", "beauty",
                ("Eau de parfum 50 ml", "Eau de toilette 100 ml"),
                ("neroli", "vetiver", "rose & oud"), (39, 89), ("Lumière",), 0.3),
    ProductLine("makeup", "beauty", ("Tinted lip balm", "Volumising mascara", "Cream blush"),
                ("nude", "berry", "coral"), (9, 25), ("Lumière", "Botanica"), 0.6),
    ProductLine("coffee-tea", "grocery",
                ("Single-origin ground coffee 250 g", "Espresso beans 1 kg",
                 "Earl Grey tea, 50 bags", "Matcha powder 30 g", "Chai spice tea, 20 bags"),
                (), (4.5, 24), ("Oakridge Roasters", "Greenfield"), 0.85),
    ProductLine("chocolate", "grocery",
                ("Dark chocolate 70 % 100 g", "Sea-salt milk chocolate 100 g",
                 "Hazelnut pralines, box of 12", "Almond biscotti 200 g"), (), (2.5, 14),
                ("Bellabake", "Greenfield"), 0.7),
    ProductLine("pantry", "grocery",
                ("Extra-virgin olive oil 500 ml", "Sourdough crackers 150 g",
                 "Wildflower honey 340 g", "Fresh tagliatelle 400 g", "Aged balsamic 250 ml"),
                (), (2, 16), ("Greenfield", "Tastio"), 0.8),
    ProductLine("impulse", "checkout",
                ("Reusable tote bag", "Lip balm SPF 15", "Mint pastilles", "Gift card 25 €",
                 "Hand cream 30 ml"), (), (1.5, 25), ("Storeside", "Botanica"), 0.4),
    ProductLine("snacks", "checkout",
                ("Salted caramel fudge 150 g", "Sparkling water 500 ml", "Roasted almonds 100 g"),
                (), (1.5, 5), ("Greenfield", "Tastio"), 0.7),
)

NOTES: Final = ("", "", "", "prefers natural fibres", "often buys gifts", "likes new arrivals",
                "asks about care instructions", "prefers fragrance-free skincare")


def style_id_of(base: str) -> str:
    """The style id of a line's base product: "Wool beanie" → "style-wool-beanie" (readable
    in the database, unique because the bases are)."""
    return "style-" + re.sub(r"[^a-z0-9]+", "-", base.casefold()).strip("-")
