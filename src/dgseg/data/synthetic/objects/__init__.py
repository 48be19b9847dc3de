"""The objects a street is made of, grouped by kind: :mod:`.ground` (ground plane, far background),
:mod:`.buildings`, :mod:`.plants`, :mod:`.furniture` (lamps, traffic lights, signs), :mod:`.vehicles`,
:mod:`.people` (pedestrians, two-wheelers). Each is a small dataclass: ``sample(rng, ...)`` makes every
random choice of its look (called by the layout, in a fixed order), ``draw(gb, cam)`` rasterises it."""
