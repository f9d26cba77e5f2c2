/*
 * Demo storefront logic shared by every page under /demo/. Plain ES5, no build.
 * It exercises the tracker with Segment's e-commerce spec event names, so the
 * pipeline's journey stages have something realistic to chew on.
 * Element ids are stable on purpose: tests/browser drives these pages.
 */

// Queue stub: calls made before the async tracker loads are replayed by it.
window.clickstream = window.clickstream || [];
['track', 'identify', 'page', 'alias'].forEach(function (m) {
  clickstream[m] = clickstream[m] || function () {
    clickstream.push([m].concat([].slice.call(arguments)));
  };
});

var CURRENCY = 'USD';
// Product "photos" are monogram tiles: no image assets, and no reliance on
// emoji fonts (often missing on Linux and in headless browsers).
var BRAND = 'Clickstream Co.';
var PRODUCTS = [
  { id: 'p-1001', sku: 'MUG-MID-12', name: 'Midnight Mug', category: 'Kitchen', price: 14.0, mark: 'MM', tint: '#dbeafe', ink: '#1d4ed8',
    desc: 'A 12 oz stoneware mug with a matte black glaze. Keeps late-night queries warm.' },
  { id: 'p-1002', sku: 'TEE-FUN-M', name: 'Funnel Tee', category: 'Apparel', price: 24.0, mark: 'FT', tint: '#fce7f3', ink: '#be185d',
    desc: 'Soft organic cotton tee printed with a conversion funnel. It only narrows at the bottom.' },
  { id: 'p-1003', sku: 'NB-DOT-A5', name: 'Dot Grid Notebook', category: 'Stationery', price: 9.5, mark: 'DG', tint: '#dcfce7', ink: '#15803d',
    desc: 'A5, 160 pages of dot grid, lay-flat binding. For sketching user journeys.' },
  { id: 'p-1004', sku: 'HP-SES-01', name: 'Session Headphones', category: 'Audio', price: 89.0, mark: 'SH', tint: '#ede9fe', ink: '#6d28d9',
    desc: 'Closed-back headphones with 30-minute inactivity auto-off. Sessionization you can hear.' },
  { id: 'p-1005', sku: 'PL-CAC-S', name: 'Tiny Cactus', category: 'Home', price: 12.0, mark: 'TC', tint: '#fef9c3', ink: '#a16207',
    desc: 'A low-maintenance desk plant. Needs water roughly as often as you rotate keys.' },
  { id: 'p-1006', sku: 'BT-KAF-1L', name: 'Stream Bottle', category: 'Kitchen', price: 19.0, mark: 'SB', tint: '#cffafe', ink: '#0e7490',
    desc: 'One litre insulated bottle. Handles high throughput without leaking.' }
];

// ---------- helpers ----------

function $(id) {
  return document.getElementById(id);
}

function money(n) {
  return '$' + n.toFixed(2);
}

function round2(n) {
  return Math.round(n * 100) / 100;
}

function randomId(prefix) {
  return prefix + Math.random().toString(36).slice(2, 10);
}

function findProduct(id) {
  for (var i = 0; i < PRODUCTS.length; i++) if (PRODUCTS[i].id === id) return PRODUCTS[i];
  return null;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
  });
}

// Segment's product shape for e-commerce events.
function productProps(p, extra) {
  var o = {
    product_id: p.id,
    sku: p.sku,
    name: p.name,
    category: p.category,
    brand: BRAND,
    price: p.price,
    currency: CURRENCY,
    url: location.origin + '/demo/product.html?id=' + encodeURIComponent(p.id)
  };
  for (var k in extra || {}) o[k] = extra[k];
  return o;
}

// 32-bit FNV-1a: a stable, non-reversible-enough user id for the demo.
function fnv1a(s) {
  var h = 0x811c9dc5;
  for (var i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return ('0000000' + h.toString(16)).slice(-8);
}

// ---------- cart (localStorage) ----------

var CART_KEY = 'demo_cart';

function loadCart() {
  try {
    var c = JSON.parse(localStorage.getItem(CART_KEY));
    if (c && c.items) return c;
  } catch (e) {}
  return { id: randomId('cart-'), items: [] };
}

function saveCart(cart) {
  localStorage.setItem(CART_KEY, JSON.stringify(cart));
  renderCartCount();
}

function cartLines(cart) {
  var lines = [];
  cart.items.forEach(function (it) {
    var p = findProduct(it.product_id);
    if (p) lines.push({ product: p, quantity: it.quantity });
  });
  return lines;
}

function cartProducts(cart) {
  return cartLines(cart).map(function (l, i) {
    return productProps(l.product, { quantity: l.quantity, position: i + 1 });
  });
}

function cartSubtotal(cart) {
  return round2(cartLines(cart).reduce(function (s, l) {
    return s + l.product.price * l.quantity;
  }, 0));
}

function renderCartCount() {
  var n = loadCart().items.reduce(function (s, it) {
    return s + it.quantity;
  }, 0);
  var el = $('cart-count');
  if (el) el.textContent = n;
}

function toast(msg) {
  var el = $('toast');
  if (!el) return;
  el.textContent = msg;
  el.className = 'toast show';
  clearTimeout(toast.t);
  toast.t = setTimeout(function () {
    el.className = 'toast';
  }, 1800);
}

// ---------- pages ----------

function thumb(p, size) {
  return '<div class="thumb ' + size + '" style="background:' + p.tint + ';color:' + p.ink + '">' + p.mark + '</div>';
}

function productCard(p, i) {
  return (
    '<a class="card" id="product-link-' + esc(p.id) + '" href="product.html?id=' + encodeURIComponent(p.id) + '" data-position="' + (i + 1) + '">' +
    thumb(p, '') +
    '<div class="card-body"><div class="muted small">' + esc(p.category) + '</div>' +
    '<div class="card-title">' + esc(p.name) + '</div>' +
    '<div class="price">' + money(p.price) + '</div></div></a>'
  );
}

function listProps(listId, list) {
  return {
    list_id: listId,
    category: 'All',
    products: list.map(function (p, i) {
      return productProps(p, { position: i + 1 });
    })
  };
}

function renderList(list) {
  $('product-list').innerHTML = list.length
    ? list.map(productCard).join('')
    : '<p class="muted" id="no-results">No products match your search.</p>';
}

function initHome() {
  renderList(PRODUCTS);
  clickstream.track('Product List Viewed', listProps('all_products', PRODUCTS));

  $('search-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var query = $('search-input').value.trim();
    var needle = query.toLowerCase();
    var hits = PRODUCTS.filter(function (p) {
      return !needle || (p.name + ' ' + p.category + ' ' + p.desc).toLowerCase().indexOf(needle) >= 0;
    });
    renderList(hits);
    $('results-title').textContent = query ? 'Results for “' + query + '”' : 'All products';
    clickstream.track('Products Searched', { query: query });
    clickstream.track('Product List Viewed', listProps('search_results', hits));
  });
}

function initProduct() {
  var id = new URLSearchParams(location.search).get('id');
  var p = findProduct(id);
  if (!p) {
    $('product').innerHTML = '<h1>Product not found</h1><p><a href="index.html">Back to the shop</a></p>';
    return;
  }
  document.title = p.name + ' · Clickstream Shop';
  $('product-thumb').style.background = p.tint;
  $('product-thumb').style.color = p.ink;
  $('product-thumb').textContent = p.mark;
  $('product-category').textContent = p.category;
  $('product-name').textContent = p.name;
  $('product-price').textContent = money(p.price);
  $('product-desc').textContent = p.desc;
  $('product-sku').textContent = p.sku;

  clickstream.track('Product Viewed', productProps(p));

  $('add-to-cart').addEventListener('click', function () {
    var qty = Math.max(1, parseInt($('quantity').value, 10) || 1);
    var cart = loadCart();
    var line = cart.items.filter(function (it) {
      return it.product_id === p.id;
    })[0];
    if (line) line.quantity += qty;
    else cart.items.push({ product_id: p.id, quantity: qty });
    saveCart(cart);
    clickstream.track('Product Added', productProps(p, { cart_id: cart.id, quantity: qty }));
    toast('Added ' + qty + ' × ' + p.name + ' to your cart');
  });

  $('review-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var rating = parseInt($('review-rating').value, 10);
    var text = $('review-body').value.trim();
    var reviewId = randomId('rev-');
    clickstream.track('Product Reviewed', {
      product_id: p.id,
      review_id: reviewId,
      review_body: text,
      rating: rating
    });
    var li = document.createElement('li');
    li.innerHTML = '<span class="stars">' + '★★★★★'.slice(0, rating) + '☆☆☆☆☆'.slice(0, 5 - rating) + '</span> ' + esc(text || '(no comment)');
    $('reviews').appendChild(li);
    $('review-form').reset();
    toast('Thanks for your review!');
  });
}

function renderCart() {
  var cart = loadCart();
  var lines = cartLines(cart);
  $('cart-items').innerHTML = lines.length
    ? lines.map(function (l) {
        var p = l.product;
        return (
          '<div class="line">' + thumb(p, 'sm') +
          '<div class="grow"><a href="product.html?id=' + encodeURIComponent(p.id) + '">' + esc(p.name) + '</a>' +
          '<div class="muted small">' + l.quantity + ' × ' + money(p.price) + '</div></div>' +
          '<div class="price">' + money(p.price * l.quantity) + '</div>' +
          '<button class="link" id="remove-' + esc(p.id) + '" data-id="' + esc(p.id) + '">Remove</button></div>'
        );
      }).join('')
    : '<p class="muted" id="cart-empty">Your cart is empty. <a href="index.html">Keep shopping</a>.</p>';
  $('cart-subtotal').textContent = money(cartSubtotal(cart));
  $('checkout').disabled = !lines.length;
}

function initCart() {
  var cart = loadCart();
  renderCart();
  clickstream.track('Cart Viewed', { cart_id: cart.id, products: cartProducts(cart) });

  $('cart-items').addEventListener('click', function (e) {
    var id = e.target.getAttribute && e.target.getAttribute('data-id');
    if (!id) return;
    var c = loadCart();
    var line = c.items.filter(function (it) {
      return it.product_id === id;
    })[0];
    c.items = c.items.filter(function (it) {
      return it.product_id !== id;
    });
    saveCart(c);
    if (line) clickstream.track('Product Removed', productProps(findProduct(id), { cart_id: c.id, quantity: line.quantity }));
    renderCart();
  });

  $('checkout').addEventListener('click', function () {
    var c = loadCart();
    var checkoutId = randomId('chk-');
    localStorage.setItem('demo_checkout', checkoutId);
    var subtotal = cartSubtotal(c);
    clickstream.track('Checkout Started', {
      checkout_id: checkoutId,
      cart_id: c.id,
      value: subtotal,
      revenue: subtotal,
      currency: CURRENCY,
      products: cartProducts(c)
    });
    location.href = 'checkout.html';
  });
}

var SHIPPING = { standard: 4.95, express: 12.5 };
var TAX_RATE = 0.08;

function totals(cart) {
  var subtotal = cartSubtotal(cart);
  var shipping = subtotal ? SHIPPING[$('shipping-method').value] || 0 : 0;
  var tax = round2(subtotal * TAX_RATE);
  return { subtotal: subtotal, shipping: shipping, tax: tax, total: round2(subtotal + shipping + tax) };
}

function initCheckout() {
  var cart = loadCart();
  var lastIdentified = null;

  function renderSummary() {
    var t = totals(cart);
    $('summary-items').innerHTML = cartLines(cart).map(function (l) {
      return '<div class="row"><span>' + l.quantity + ' × ' + esc(l.product.name) + '</span><span>' + money(l.product.price * l.quantity) + '</span></div>';
    }).join('') || '<p class="muted">Your cart is empty.</p>';
    $('summary-subtotal').textContent = money(t.subtotal);
    $('summary-shipping').textContent = money(t.shipping);
    $('summary-tax').textContent = money(t.tax);
    $('summary-total').textContent = money(t.total);
    $('place-order').disabled = !cart.items.length;
  }

  // Identify as soon as we learn who the shopper is; the id is a hash of the
  // email so the raw address only lives in traits.
  function identifyEmail() {
    var email = $('email').value.trim().toLowerCase();
    if (!email || email.indexOf('@') < 1 || email === lastIdentified) return;
    lastIdentified = email;
    clickstream.identify('user-' + fnv1a(email), { email: email, name: $('name').value.trim() || undefined });
  }

  renderSummary();
  $('shipping-method').addEventListener('change', renderSummary);
  $('email').addEventListener('change', identifyEmail);

  $('checkout-form').addEventListener('submit', function (e) {
    e.preventDefault();
    identifyEmail();
    var checkoutId = localStorage.getItem('demo_checkout') || randomId('chk-');
    var orderId = randomId('ord-');
    var shippingMethod = $('shipping-method').value;
    var t = totals(cart);
    clickstream.track('Checkout Step Completed', { checkout_id: checkoutId, step: 1, shipping_method: shippingMethod });
    clickstream.track('Payment Info Entered', { checkout_id: checkoutId, order_id: orderId, step: 2, payment_method: 'card' });
    clickstream.track('Order Completed', {
      checkout_id: checkoutId,
      order_id: orderId,
      affiliation: 'Clickstream Demo Shop',
      total: t.total,
      revenue: t.subtotal,
      shipping: t.shipping,
      tax: t.tax,
      currency: CURRENCY,
      products: cartProducts(cart)
    });
    localStorage.removeItem(CART_KEY);
    localStorage.removeItem('demo_checkout');
    renderCartCount();
    $('checkout-form').hidden = true;
    $('order-id').textContent = orderId;
    $('order-confirmation').hidden = false;
  });
}

document.addEventListener('DOMContentLoaded', function () {
  renderCartCount();
  var page = document.body.getAttribute('data-page');
  ({ home: initHome, product: initProduct, cart: initCart, checkout: initCheckout }[page] || function () {})();
});
