"""One construct per part of the architecture; `infra.stack` composes them."""
