"""pngplot.py — line charts as PNG files with the Python standard library only (zlib for the
image data), so that `make demo` draws its plots on a fresh machine without matplotlib.

    from pngplot import Chart
    c = Chart("VALIDATION LOSS", "STEP", "LOSS")
    c.line("PHASE 0", [(0, 7.1), (100, 5.2)])
    c.save("loss.png")

Text uses a built-in 5x7 bitmap font: digits, upper-case letters and . - + % / ( ) : = x; other
characters are drawn as blanks (labels are upper-cased)."""
import math
import struct
import zlib

# 5x7 glyphs, one string of 7 rows of 5 bits ('#' set) per character
_FONT = {
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####....#...#...##.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "###..#..#.#...##...##...##..#.###..",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....##..#..##...",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#", "N": "#...###..##.#.##..###...##...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".#####....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    ".": "..............................##...", "-": "...............###.................",
    "+": ".......#....#..#####..#....#.......", "%": "##...##..#...#...#...#...#..##...##",
    "/": "....#....#...#...#...#...#....#....", "(": "...#...#...#....#....#.....#.....#.",
    ")": ".#.....#.....#....#....#...#...#...", ":": ".......##...##.........##...##.....",
    "=": "..........#####.....#####..........", "x": "..........#...#.#.#...#...#.#.#...#",
    "_": "." * 30 + "#####", " ": "." * 35,
}
PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75), (227, 119, 194),
           (127, 127, 127), (188, 189, 34), (23, 190, 207)]


class Canvas:
    def __init__(self, w, h, bg=(255, 255, 255)):
        self.w, self.h = w, h
        self.px = bytearray(bytes(bg) * (w * h))

    def set(self, x, y, c):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i:i + 3] = bytes(c)

    def rect(self, x0, y0, x1, y1, c):
        for y in range(max(0, y0), min(self.h, y1)):
            for x in range(max(0, x0), min(self.w, x1)):
                self.set(x, y, c)

    def line(self, x0, y0, x1, y1, c, width=1):
        x0, y0, x1, y1 = int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        r = width // 2
        while True:
            for oy in range(-r, width - r):
                for ox in range(-r, width - r):
                    self.set(x0 + ox, y0 + oy, c)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x, y, s, c=(0, 0, 0), scale=1):
        """Draws s with its top-left corner at (x, y); returns its width in pixels."""
        for k, ch in enumerate(str(s).upper() if not str(s).isdigit() else str(s)):
            g = _FONT.get(ch, _FONT.get(ch.upper(), _FONT[" "]))
            for row in range(7):
                for col in range(5):
                    if g[row * 5 + col] == "#":
                        self.rect(x + (6 * k + col) * scale, y + row * scale, x + (6 * k + col + 1) * scale, y + (row + 1) * scale, c)
        return 6 * len(str(s)) * scale

    def save(self, path):
        raw = b"".join(b"\x00" + bytes(self.px[3 * y * self.w:3 * (y + 1) * self.w]) for y in range(self.h))

        def chunk(tag, data):
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)) +
                    chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _ticks(lo, hi, n=5):
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + 1e-9 * step:
        out.append(t)
        t += step
    return out


def _fmt(v):
    if v == 0:
        return "0"
    if abs(v) >= 10000 or abs(v) < 0.01:
        return "%.0e" % v
    return ("%.2f" % v).rstrip("0").rstrip(".")


class Chart:
    """Lines over a shared x axis (log2 x when logx: the context-length plots)."""

    def __init__(self, title, xlabel, ylabel, logx=False, width=800, height=500):
        self.title, self.xlabel, self.ylabel, self.logx = title, xlabel, ylabel, logx
        self.width, self.height = width, height
        self.series = []

    def line(self, name, points):
        pts = [(float(x), float(y)) for x, y in points if y is not None and math.isfinite(float(y))]
        if pts:
            self.series.append((name, sorted(pts)))

    def save(self, path):
        c = Canvas(self.width, self.height)
        L, R, T, B = 70, 200, 40, 50  # margins: the legend goes on the right
        pw, ph = self.width - L - R, self.height - T - B
        c.text(L, 12, self.title, scale=2)
        if not self.series:
            c.text(L, T + ph // 2, "NO DATA")
            c.save(path)
            return
        xs = [p[0] for _, pts in self.series for p in pts]
        ys = [p[1] for _, pts in self.series for p in pts]
        fx = (lambda v: math.log2(v)) if self.logx else (lambda v: v)
        x0, x1 = fx(min(xs)), fx(max(xs))
        if x1 == x0:
            x1 = x0 + 1
        y0, y1 = min(ys), max(ys)
        pad = 0.05 * (y1 - y0 if y1 > y0 else abs(y1) + 1)
        y0, y1 = y0 - pad, y1 + pad
        X = lambda v: L + (fx(v) - x0) / (x1 - x0) * pw
        Y = lambda v: T + ph - (v - y0) / (y1 - y0) * ph
        grey, black = (225, 225, 225), (0, 0, 0)
        for t in _ticks(y0, y1, 8):
            c.line(L, Y(t), L + pw, Y(t), grey)
            s = _fmt(t)
            c.text(L - 8 - 6 * len(s), int(Y(t)) - 3, s)
        xt = sorted(set(xs)) if self.logx else _ticks(min(xs), max(xs))
        for t in xt:
            c.line(X(t), T, X(t), T + ph, grey)
            s = str(int(t)) if self.logx else _fmt(t)
            c.text(int(X(t)) - 3 * len(s), T + ph + 8, s)
        c.line(L, T, L, T + ph, black)
        c.line(L, T + ph, L + pw, T + ph, black)
        c.text(L + pw // 2 - 3 * len(self.xlabel), self.height - 18, self.xlabel)
        c.text(8, T - 14, self.ylabel)
        for k, (name, pts) in enumerate(self.series):
            col = PALETTE[k % len(PALETTE)]
            for (a, b), (p, q) in zip(pts, pts[1:]):
                c.line(X(a), Y(b), X(p), Y(q), col, width=2)
            if len(pts) < 30:
                for a, b in pts:
                    c.rect(int(X(a)) - 2, int(Y(b)) - 2, int(X(a)) + 3, int(Y(b)) + 3, col)
            ly = T + 10 + 16 * k
            c.line(L + pw + 15, ly + 3, L + pw + 35, ly + 3, col, width=3)
            c.text(L + pw + 40, ly, name[:26])
        c.save(path)
