from quart import Quart, jsonify, request

app = Quart(__name__)


@app.route("/")
async def index():
    return jsonify(framework="quart", args=request.args.to_dict())


@app.route("/echo", methods=["POST"])
async def echo():
    data = await request.get_data()
    return jsonify(size=len(data))
