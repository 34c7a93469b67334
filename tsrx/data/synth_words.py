"""The built-in word list of the synthetic data: short words of shop signs, labels and streets,
in the spirit of TextZoom's crops (mostly single words, some numbers and codes)."""

WORDS = """
the and for you all new one our out are not but can day get has her his how man now old see
two way who boy did its let put say she too use open shop sale food cafe bar hotel bank park
road street avenue city center market store coffee pizza house home life love time year good
great best free fresh hot cold star king queen royal grand plaza tower bridge river lake hill
north south east west main first second third today tonight welcome exit entrance stop police
taxi bus train station airport ticket office service center museum garden school college
university library hospital pharmacy doctor dental clinic beauty salon hair nails spa fitness
gym sports club music dance theatre cinema movie game play kids family baby fashion style shoes
bags jewelry watch phone mobile computer digital photo print copy books news paper post mail
express delivery fast quick easy smart simple super mega ultra power energy water fire earth
green blue red black white gold silver orange purple yellow brown pink light dark night morning
coffee tea juice milk bread cake candy chocolate cream ice burger grill kitchen restaurant diner
pub wine beer deli bakery butcher fruit fish meat chicken rice noodle sushi taco pasta salad soup
open closed sale discount offer price only new now limited special daily weekly menu order
parking garage motor auto car tires repair wash oil gas fuel bike cycle marine boat ship port
company group global world national international local public private limited trading industry
factory design studio gallery art craft wood stone glass steel metal paint build home land
estate rent lease apartment suite floor room door gate window wall roof garden flower plant
tree leaf sun moon sky rain snow wind cloud storm summer winter spring autumn holiday travel
tour trip journey adventure island beach ocean sea coast harbor bay valley forest mountain
""".split()
WORDS = list(dict.fromkeys(WORDS))  # drop repeats, keep the order (determinism per seed)
