"""Two cells in one module, to run in two terminals and find in the registry.

python -m orchestro run examples/catalog.py --cell catalog      # terminal 1
python -m orchestro run examples/catalog.py --cell reviews      # terminal 2
python -m orchestro ls                                          # terminal 3
"""

from typing import Annotated

from pydantic import BaseModel, Field

from orchestro import HTTPError, cell, service


class Product(BaseModel):
    sku: str
    name: str
    price_cents: int


class Review(BaseModel):
    sku: str
    stars: int = Field(ge=1, le=5)
    text: str = Field(max_length=500)


PRODUCTS = {
    "tea": Product(sku="tea", name="Green tea", price_cents=450),
    "cup": Product(sku="cup", name="Tea cup", price_cents=1200),
}


@cell("catalog", port=8083, version="1.0.0")
class Catalog:
    """What the shop sells."""

    @service.get("/products")
    async def products(self) -> list[Product]:
        """Every product."""
        return list(PRODUCTS.values())

    @service.get("/products/{sku}", responses={404: "No such product"})
    async def product(self, sku: str) -> Product:
        """One product."""
        if sku not in PRODUCTS:
            raise HTTPError(404, f"no product {sku!r}")
        return PRODUCTS[sku]


@cell("reviews", port=8084, version="1.0.0")
class Reviews:
    """What customers think."""

    def __init__(self) -> None:
        self.reviews: list[Review] = []

    @service.post("/reviews", status=201)
    async def add(self, review: Review) -> Review:
        """Add a review."""
        self.reviews.append(review)
        return review

    @service.get("/reviews")
    async def list_reviews(
        self, sku: str | None = None, limit: Annotated[int, Field(ge=1, le=50)] = 10
    ) -> list[Review]:
        """The latest reviews, optionally of one product."""
        found = [r for r in reversed(self.reviews) if sku is None or r.sku == sku]
        return found[:limit]
